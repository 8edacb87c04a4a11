//! [`Request`] / [`Response`] → Omaha XML. Known attributes first in a fixed order, then
//! `extra` in name order; absent values are left out.

use crate::types::*;
use crate::xml::{write_document, Element};

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

fn with_extra(mut el: Element, extra: &Extra) -> Element {
    for (k, v) in extra {
        el.attrs.push((k.clone(), v.clone()));
    }
    el
}

/// Writes a request as update_engine lays it out (`ismachine` as `1`/`0`).
pub fn write_request(r: &Request) -> String {
    let mut root = Element::new("request");
    root.attr("protocol", r.protocol.as_deref())
        .attr("version", r.version.as_deref())
        .attr("updaterversion", r.updater_version.as_deref())
        .attr("installsource", r.install_source.as_deref())
        .attr("ismachine", r.is_machine.map(|b| if b { "1" } else { "0" }));
    let mut root = with_extra(root, &r.extra);
    if let Some(os) = &r.os {
        let mut el = Element::new("os");
        el.attr("platform", os.platform.as_deref())
            .attr("version", os.version.as_deref())
            .attr("sp", os.sp.as_deref())
            .attr("arch", os.arch.as_deref());
        root.children.push(with_extra(el, &os.extra));
    }
    for app in &r.apps {
        root.children.push(request_app(app));
    }
    write_document(&root)
}

fn request_app(app: &App) -> Element {
    let mut el = Element::new("app");
    el.attr("appid", Some(app.appid.as_str()))
        .attr("version", app.version.as_deref())
        .attr("track", app.track.as_deref())
        .attr("bootid", app.bootid.as_deref())
        .attr("oem", app.oem.as_deref())
        .attr("oemversion", app.oem_version.as_deref())
        .attr("alephversion", app.aleph_version.as_deref())
        .attr("machineid", app.machineid.as_deref())
        .attr("machinealias", app.alias.as_deref())
        .attr("lang", app.lang.as_deref())
        .attr("board", app.board.as_deref())
        .attr("hardware_class", app.hardware_class.as_deref())
        .attr("delta_okay", app.delta_okay.map(bool_str));
    let mut el = with_extra(el, &app.extra);
    if let Some(p) = &app.ping {
        let mut ping = Element::new("ping");
        ping.attr("active", p.active.map(|v| v.to_string()))
            .attr("a", p.a.map(|v| v.to_string()))
            .attr("r", p.r.map(|v| v.to_string()));
        el.children.push(with_extra(ping, &p.extra));
    }
    if let Some(u) = &app.updatecheck {
        el.children
            .push(with_extra(Element::new("updatecheck"), &u.extra));
    }
    for e in &app.events {
        let mut ev = Element::new("event");
        ev.attr("eventtype", Some(e.event_type.to_string()))
            .attr("eventresult", Some(e.event_result.to_string()))
            .attr("errorcode", e.error_code.map(|c| c.to_string()))
            .attr("previousversion", e.previous_version.as_deref());
        el.children.push(with_extra(ev, &e.extra));
    }
    el
}

/// Writes a response update_engine accepts when it carries what [`crate::client_outcome`]
/// requires (explicit `status`, a `url`, a `package` with `name` and `size`, a
/// `postinstall` action with `sha256`).
pub fn write_response(r: &Response) -> String {
    let mut root = Element::new("response");
    root.attr("protocol", r.protocol.as_deref())
        .attr("server", r.server.as_deref());
    let mut root = with_extra(root, &r.extra);
    if let Some(d) = &r.daystart {
        let mut el = Element::new("daystart");
        el.attr("elapsed_seconds", d.elapsed_seconds.map(|v| v.to_string()))
            .attr("elapsed_days", d.elapsed_days.map(|v| v.to_string()));
        root.children.push(with_extra(el, &d.extra));
    }
    for app in &r.apps {
        root.children.push(response_app(app));
    }
    write_document(&root)
}

fn ack(name: &str, a: &Ack) -> Element {
    let mut el = Element::new(name);
    el.attr("status", a.status.as_deref());
    with_extra(el, &a.extra)
}

fn response_app(app: &AppResponse) -> Element {
    let mut el = Element::new("app");
    el.attr("appid", Some(app.appid.as_str()))
        .attr("status", app.status.as_deref());
    let mut el = with_extra(el, &app.extra);
    if let Some(p) = &app.ping {
        el.children.push(ack("ping", p));
    }
    if let Some(u) = &app.updatecheck {
        el.children.push(updatecheck(u));
    }
    for e in &app.events {
        el.children.push(ack("event", e));
    }
    el
}

fn updatecheck(u: &UpdateCheck) -> Element {
    let mut el = Element::new("updatecheck");
    el.attr("status", u.status.as_ref().map(|s| s.as_str().to_owned()))
        .attr("PollInterval", u.poll_interval.map(|v| v.to_string()));
    let mut el = with_extra(el, &u.extra);
    if !u.urls.is_empty() {
        let mut urls = Element::new("urls");
        for url in &u.urls {
            let mut e = Element::new("url");
            e.attr("codebase", Some(url.codebase.as_str()));
            urls.children.push(with_extra(e, &url.extra));
        }
        el.children.push(urls);
    }
    for m in &u.manifests {
        el.children.push(manifest(m));
    }
    el
}

fn manifest(m: &Manifest) -> Element {
    let mut el = Element::new("manifest");
    el.attr("version", Some(m.version.as_str()));
    let mut el = with_extra(el, &m.extra);
    let mut packages = Element::new("packages");
    for p in &m.packages {
        let mut e = Element::new("package");
        e.attr("name", Some(p.name.as_str()))
            .attr("hash", p.hash.as_deref())
            .attr("hash_sha256", p.hash_sha256.as_deref())
            .attr("size", p.size.map(|v| v.to_string()))
            .attr("required", p.required.map(bool_str));
        packages.children.push(with_extra(e, &p.extra));
    }
    el.children.push(packages);
    let mut actions = Element::new("actions");
    for a in &m.actions {
        let mut e = Element::new("action");
        e.attr("event", Some(a.event.as_str()))
            .attr("sha256", a.sha256.as_deref())
            .attr("ChromeOSVersion", a.chromeos_version.as_deref())
            .attr("needsadmin", a.needs_admin.map(bool_str))
            .attr("IsDeltaPayload", a.is_delta_payload.map(bool_str))
            .attr(
                "DisablePayloadBackoff",
                a.disable_payload_backoff.map(bool_str),
            )
            .attr("MetadataSignatureRsa", a.metadata_signature_rsa.as_deref())
            .attr("MetadataSize", a.metadata_size.map(|v| v.to_string()))
            .attr(
                "MaxFailureCountPerUrl",
                a.max_failure_count_per_url.map(|v| v.to_string()),
            );
        actions.children.push(with_extra(e, &a.extra));
    }
    el.children.push(actions);
    el
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{client_outcome, parse_request, parse_response, Outcome};

    fn keel_response() -> Response {
        let mut extra = Extra::new();
        extra.insert(keel_attr::KEY_ID.into(), "k-2026".into());
        extra.insert(keel_attr::VERSION.into(), "2.0.0".into());
        Response {
            protocol: Some("3.0".into()),
            server: Some("keel".into()),
            daystart: Some(DayStart {
                elapsed_seconds: Some(100),
                ..Default::default()
            }),
            apps: vec![AppResponse {
                appid: KEEL_APP_ID.into(),
                status: Some("ok".into()),
                ping: Some(Ack::ok()),
                updatecheck: Some(UpdateCheck {
                    status: Some(UpdateStatus::Ok),
                    poll_interval: Some(2700),
                    urls: vec![Url {
                        codebase: "https://u.example/a&b/2.0.0".into(),
                        extra: Extra::new(),
                    }],
                    manifests: vec![Manifest {
                        version: "2.0.0".into(),
                        packages: vec![Package {
                            name: "usr.img".into(),
                            hash: Some("I6DGNAOrJRUxPbCuLw+AITfiVMo=".into()),
                            hash_sha256: Some("3aed".into()),
                            size: Some(123_123_123_123_123),
                            required: Some(true),
                            extra: Extra::new(),
                        }],
                        actions: vec![Action {
                            event: "postinstall".into(),
                            sha256: Some("stLG3U/o4Ar8TMHFwT/RWB0iNkaWOO6QtLrq6+AHBbA=".into()),
                            chromeos_version: Some("2.0.0".into()),
                            needs_admin: Some(false),
                            disable_payload_backoff: Some(true),
                            extra,
                            ..Default::default()
                        }],
                        extra: Extra::new(),
                    }],
                    extra: Extra::new(),
                }),
                events: vec![Ack::ok()],
                extra: Extra::new(),
            }],
            extra: Extra::new(),
        }
    }

    #[test]
    fn a_written_response_reads_back_as_the_same_update() {
        let r = keel_response();
        let xml = write_response(&r);
        let back = parse_response(xml.as_bytes()).unwrap();
        assert_eq!(back, r);
        let Outcome::UpdateAvailable(u) = client_outcome(&back, &format!("{{{KEEL_APP_ID}}}"))
        else {
            panic!("no update in {xml}")
        };
        assert_eq!(u.url, "https://u.example/a&b/2.0.0/usr.img");
        assert_eq!(u.size, 123_123_123_123_123);
        assert_eq!(u.sha256, "stLG3U/o4Ar8TMHFwT/RWB0iNkaWOO6QtLrq6+AHBbA=");
        assert_eq!(u.hash_sha1.as_deref(), Some("I6DGNAOrJRUxPbCuLw+AITfiVMo="));
        assert_eq!(u.version, "2.0.0");
        assert!(u.disable_payload_backoff);
        assert_eq!(u.poll_interval, Some(2700));
        assert_eq!(u.action_extra[keel_attr::KEY_ID], "k-2026");
        assert!(xml.contains("a&amp;b"), "{xml}");
    }

    #[test]
    fn a_written_request_reads_back_equal() {
        let r = Request {
            protocol: Some("3.0".into()),
            version: Some("keel-update-0.1.0".into()),
            updater_version: Some("keel-update-0.1.0".into()),
            install_source: Some("scheduler".into()),
            is_machine: Some(true),
            os: Some(Os {
                platform: Some("Keel".into()),
                version: Some("1.0.0".into()),
                sp: Some("1.0.0_x86_64".into()),
                arch: Some("x64".into()),
                extra: Extra::new(),
            }),
            apps: vec![App {
                appid: KEEL_APP_ID.into(),
                version: Some("1.0.0".into()),
                track: Some("beta".into()),
                machineid: Some("68cf162f8fc8467ca7d8337464c863d1".into()),
                alias: Some("web \"1\" <&>".into()),
                board: Some("amd64".into()),
                delta_okay: Some(false),
                ping: Some(Ping {
                    active: Some(1),
                    a: Some(-1),
                    r: Some(-1),
                    extra: Extra::new(),
                }),
                updatecheck: Some(UpdateCheckRequest::default()),
                events: vec![Event {
                    event_type: event_type::UPDATE_COMPLETE,
                    event_result: event_result::SUCCESS_REBOOT,
                    error_code: None,
                    previous_version: Some("0.9.0".into()),
                    extra: Extra::new(),
                }],
                ..Default::default()
            }],
            extra: Extra::new(),
        };
        let xml = write_request(&r);
        assert_eq!(parse_request(xml.as_bytes()).unwrap(), r, "{xml}");
    }
}
