//! Omaha XML → [`Request`] / [`Response`].
//!
//! Requests are read strictly (the server must say what is wrong: a missing `appid`, an
//! `eventtype` that is not a number); responses leniently, the way update_engine reads them
//! (a value it would ignore is kept verbatim in `extra`, not an error).

use std::str::FromStr;

use crate::error::{Error, Position, MAX_REQUEST_BYTES};
use crate::types::*;
use crate::xml::{self, Element};

/// One element being converted: its attributes not yet claimed, its child elements not yet
/// taken, and its path for errors. It owns what it was made from: nothing is copied.
struct Node<'a> {
    children: Vec<Element>,
    offset: usize,
    path: String,
    body: &'a [u8],
    attrs: Extra,
}

impl<'a> Node<'a> {
    fn new(el: Element, path: String, body: &'a [u8]) -> Self {
        Node {
            children: el.children,
            offset: el.offset,
            path,
            body,
            attrs: el.attrs.into_iter().collect(),
        }
    }

    fn invalid(&self, message: String) -> Error {
        Error::Invalid {
            element: self.path.clone(),
            at: Position::in_body(self.body, self.offset),
            message,
        }
    }

    fn take(&mut self, name: &str) -> Option<String> {
        self.attrs.remove(name)
    }

    fn required(&mut self, name: &str) -> Result<String, Error> {
        self.take(name)
            .ok_or_else(|| self.invalid(format!("attribute {name} is missing")))
    }

    /// A number that must be one (requests).
    fn strict<T: FromStr>(&mut self, name: &str) -> Result<Option<T>, Error> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.invalid(format!("attribute {name}={v:?} is not a number"))),
        }
    }

    fn strict_bool(&mut self, name: &str) -> Result<Option<bool>, Error> {
        match self.take(name).as_deref() {
            None => Ok(None),
            Some("1" | "true") => Ok(Some(true)),
            Some("0" | "false") => Ok(Some(false)),
            Some(v) => Err(self.invalid(format!(
                "attribute {name}={v:?} is not a boolean (true/false/1/0)"
            ))),
        }
    }

    /// A value in canonical form, or `None` with the raw text left in `extra` (responses).
    fn lenient<T: FromStr>(&mut self, name: &str) -> Option<T> {
        let v = self.attrs.get(name)?.parse().ok()?;
        self.attrs.remove(name);
        Some(v)
    }

    fn lenient_bool(&mut self, name: &str) -> Option<bool> {
        let v = match self.attrs.get(name)?.as_str() {
            "true" => true,
            "false" => false,
            _ => return None,
        };
        self.attrs.remove(name);
        Some(v)
    }

    /// The child elements called `name`, in document order, taken out of this one.
    fn children(&mut self, name: &str) -> Vec<Node<'a>> {
        let (named, rest): (Vec<Element>, Vec<Element>) = std::mem::take(&mut self.children)
            .into_iter()
            .partition(|c| c.name == name);
        self.children = rest;
        named
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let path = format!("{}/{}[{i}]", self.path, c.name);
                Node::new(c, path, self.body)
            })
            .collect()
    }

    fn first_child(&mut self, name: &str) -> Option<Node<'a>> {
        self.children(name).into_iter().next()
    }

    fn rest(self) -> Extra {
        self.attrs
    }
}

fn root<'a>(body: &'a [u8], el: Element, expected: &str) -> Result<Node<'a>, Error> {
    let name = el.name.clone();
    let node = Node::new(el, name.clone(), body);
    if name != expected {
        return Err(node.invalid(format!("the root element is <{name}>, not <{expected}>")));
    }
    Ok(node)
}

/// Parses an Omaha request body. Bodies over [`MAX_REQUEST_BYTES`] are refused unread.
pub fn parse_request(body: &[u8]) -> Result<Request, Error> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(Error::TooLarge {
            size: body.len(),
            limit: MAX_REQUEST_BYTES,
        });
    }
    let doc = xml::parse_document(body)?;
    let mut n = root(body, doc, "request")?;
    let os = n.first_child("os").map(os).transpose()?;
    let apps = n
        .children("app")
        .into_iter()
        .map(app)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Request {
        protocol: n.take("protocol"),
        version: n.take("version"),
        updater_version: n.take("updaterversion"),
        install_source: n.take("installsource"),
        is_machine: n.strict_bool("ismachine")?,
        os,
        apps,
        extra: n.rest(),
    })
}

fn os(mut n: Node<'_>) -> Result<Os, Error> {
    Ok(Os {
        platform: n.take("platform"),
        version: n.take("version"),
        sp: n.take("sp"),
        arch: n.take("arch"),
        extra: n.rest(),
    })
}

fn app(mut n: Node<'_>) -> Result<App, Error> {
    let updatecheck = n
        .first_child("updatecheck")
        .map(|u| UpdateCheckRequest { extra: u.rest() });
    let ping = n.first_child("ping").map(ping).transpose()?;
    let events = n
        .children("event")
        .into_iter()
        .map(event)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(App {
        appid: n.required("appid")?,
        version: n.take("version"),
        track: n.take("track"),
        bootid: n.take("bootid"),
        machineid: n.take("machineid"),
        alias: n.take("machinealias"),
        oem: n.take("oem"),
        oem_version: n.take("oemversion"),
        aleph_version: n.take("alephversion"),
        lang: n.take("lang"),
        board: n.take("board"),
        hardware_class: n.take("hardware_class"),
        delta_okay: n.strict_bool("delta_okay")?,
        updatecheck,
        ping,
        events,
        extra: n.rest(),
    })
}

fn ping(mut n: Node<'_>) -> Result<Ping, Error> {
    Ok(Ping {
        active: n.strict("active")?,
        a: n.strict("a")?,
        r: n.strict("r")?,
        extra: n.rest(),
    })
}

fn event(mut n: Node<'_>) -> Result<Event, Error> {
    let event_type = n.required("eventtype")?;
    let event_type = event_type.trim().parse().map_err(|_| {
        n.invalid(format!(
            "attribute eventtype={event_type:?} is not a number"
        ))
    })?;
    let event_result = n.required("eventresult")?;
    let event_result = event_result.trim().parse().map_err(|_| {
        n.invalid(format!(
            "attribute eventresult={event_result:?} is not a number"
        ))
    })?;
    Ok(Event {
        event_type,
        event_result,
        error_code: n.strict("errorcode")?,
        previous_version: n.take("previousversion"),
        extra: n.rest(),
    })
}

/// Parses an Omaha response body: well-formed XML with a `<response>` root; everything below
/// it is read the way update_engine reads it (missing pieces are absent, not errors;
/// [`crate::client_outcome`] judges them).
pub fn parse_response(body: &[u8]) -> Result<Response, Error> {
    let doc = xml::parse_document(body)?;
    let mut n = root(body, doc, "response")?;
    let daystart = n.first_child("daystart").map(|mut d| DayStart {
        elapsed_seconds: d.lenient("elapsed_seconds"),
        elapsed_days: d.lenient("elapsed_days"),
        extra: d.rest(),
    });
    let apps = n.children("app").into_iter().map(app_response).collect();
    Ok(Response {
        protocol: n.take("protocol"),
        server: n.take("server"),
        daystart,
        apps,
        extra: n.rest(),
    })
}

fn ack(mut n: Node<'_>) -> Ack {
    Ack {
        status: n.take("status"),
        extra: n.rest(),
    }
}

fn app_response(mut n: Node<'_>) -> AppResponse {
    let ping = n.first_child("ping").map(ack);
    let updatecheck = n.first_child("updatecheck").map(updatecheck);
    let events = n.children("event").into_iter().map(ack).collect();
    AppResponse {
        appid: n.take("appid").unwrap_or_default(),
        status: n.take("status"),
        ping,
        updatecheck,
        events,
        extra: n.rest(),
    }
}

fn updatecheck(mut n: Node<'_>) -> UpdateCheck {
    let urls = n
        .children("urls")
        .into_iter()
        .flat_map(|mut u| u.children("url").into_iter().map(url))
        .collect();
    let manifests = n.children("manifest").into_iter().map(manifest).collect();
    UpdateCheck {
        status: n.take("status").map(|s| UpdateStatus::parse(&s)),
        poll_interval: n.lenient("PollInterval"),
        urls,
        manifests,
        extra: n.rest(),
    }
}

fn url(mut n: Node<'_>) -> Url {
    Url {
        codebase: n.take("codebase").unwrap_or_default(),
        extra: n.rest(),
    }
}

fn manifest(mut n: Node<'_>) -> Manifest {
    let packages = n
        .children("packages")
        .into_iter()
        .flat_map(|mut p| p.children("package").into_iter().map(package))
        .collect();
    let actions = n
        .children("actions")
        .into_iter()
        .flat_map(|mut a| a.children("action").into_iter().map(action))
        .collect();
    Manifest {
        version: n.take("version").unwrap_or_default(),
        packages,
        actions,
        extra: n.rest(),
    }
}

fn package(mut n: Node<'_>) -> Package {
    Package {
        name: n.take("name").unwrap_or_default(),
        hash: n.take("hash"),
        hash_sha256: n.take("hash_sha256"),
        size: n.lenient("size"),
        required: n.lenient_bool("required"),
        extra: n.rest(),
    }
}

fn action(mut n: Node<'_>) -> Action {
    Action {
        event: n.take("event").unwrap_or_default(),
        sha256: n.take("sha256"),
        chromeos_version: n.take("ChromeOSVersion"),
        needs_admin: n.lenient_bool("needsadmin"),
        is_delta_payload: n.lenient_bool("IsDeltaPayload"),
        disable_payload_backoff: n.lenient_bool("DisablePayloadBackoff"),
        metadata_signature_rsa: n.take("MetadataSignatureRsa"),
        metadata_size: n.lenient("MetadataSize"),
        max_failure_count_per_url: n.lenient("MaxFailureCountPerUrl"),
        extra: n.rest(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_every_part() {
        let r = parse_request(
            br#"<request protocol="3.0" version="update_engine-0.4.10" ismachine="1" sessionid="s">
  <os platform="CoreOS" version="Chateau" sp="1.0.0_x86_64"/>
  <app appid="{x}" version="1.0.0" track="beta" machinealias="m" delta_okay="false" from_track="a">
    <ping active="1" a="-1" r="-1"/><updatecheck/>
    <event eventtype="3" eventresult="0" errorcode="268435490" previousversion="0.9"/>
  </app></request>"#,
        )
        .unwrap();
        assert_eq!(r.is_machine, Some(true));
        assert_eq!(r.extra["sessionid"], "s");
        assert_eq!(r.os.as_ref().unwrap().sp.as_deref(), Some("1.0.0_x86_64"));
        let app = &r.apps[0];
        assert_eq!(
            (app.alias.as_deref(), app.delta_okay),
            (Some("m"), Some(false))
        );
        assert_eq!(app.extra["from_track"], "a");
        assert_eq!(app.ping.as_ref().unwrap().a, Some(-1));
        assert!(app.updatecheck.is_some());
        assert_eq!(app.events[0].error_code, Some(268435490));
        assert_eq!(app.events[0].previous_version.as_deref(), Some("0.9"));
    }

    #[test]
    fn request_errors_name_the_element_and_attribute() {
        let e = parse_request(b"<request>\n<app appid=\"a\"><event eventtype=\"x\" eventresult=\"1\"/></app></request>")
            .unwrap_err()
            .to_string();
        assert!(e.contains("request/app[0]/event[0]"), "{e}");
        assert!(e.contains("eventtype=\"x\""), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let e = parse_request(b"<request><app version=\"1\"/></request>").unwrap_err();
        assert!(e.to_string().contains("attribute appid is missing"), "{e}");
        let e = parse_request(b"<response/>").unwrap_err();
        assert!(e
            .to_string()
            .contains("the root element is <response>, not <request>"));
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert_eq!(
            parse_request(&big),
            Err(Error::TooLarge {
                size: MAX_REQUEST_BYTES + 1,
                limit: MAX_REQUEST_BYTES
            })
        );
    }

    #[test]
    fn response_values_update_engine_ignores_stay_verbatim() {
        let r = parse_response(
            br#"<response><daystart elapsed_seconds="x"/><app appid="a"><updatecheck status="ok">
<urls><url codebase="c"/></urls><manifest version="1"><packages><package name="p" size="0x10" required="True"/></packages>
<actions><action event="postinstall" IsDeltaPayload="true" KeelKeyId="k1"/></actions></manifest></updatecheck></app></response>"#,
        )
        .unwrap();
        let ds = r.daystart.unwrap();
        assert_eq!(
            (ds.elapsed_seconds, ds.extra["elapsed_seconds"].as_str()),
            (None, "x")
        );
        let m = &r.apps[0].updatecheck.as_ref().unwrap().manifests[0];
        assert_eq!(m.packages[0].size, None);
        assert_eq!(m.packages[0].extra["size"], "0x10");
        assert_eq!(m.packages[0].required, None);
        assert_eq!(m.actions[0].is_delta_payload, Some(true));
        assert_eq!(m.actions[0].keel_key_id(), Some("k1"));
    }
}
