//! update_engine's verdict on a response (`OmahaRequestAction::ParseResponse` in
//! flatcar/update_engine @73826410): is there an update, where, how big, which digest; or
//! the `ActionExitCode` it fails with.

use crate::action_code::ActionCode;
use crate::parse::parse_response;
use crate::types::{Action, AppResponse, Extra, Response, UpdateStatus};

impl std::fmt::Display for ActionCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a client does with a response to its update check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Boxed: an `Update` is a few hundred bytes, the other variants a few.
    UpdateAvailable(Box<Update>),
    /// `status="noupdate"`.
    NoUpdate { poll_interval: Option<u32> },
    /// The response is refused with this code.
    Error(ActionCode),
}

/// An offered update, as update_engine reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// `payload_urls[0]`: first codebase + `/` if it lacks one + first package's name.
    pub url: String,
    /// Every codebase, each joined with the package name the same way, in order.
    pub urls: Vec<String>,
    /// The first package's size (> 0).
    pub size: u64,
    /// The postinstall action's `sha256`, verbatim (base64 SHA-256 of the payload).
    pub sha256: String,
    /// The first package's `hash` (base64 SHA-1), which update_engine does not check.
    pub hash_sha1: Option<String>,
    /// The first package's `hash_sha256` (hex), if any.
    pub hash_sha256: Option<String>,
    /// The first package's name.
    pub package_name: String,
    /// The first manifest's `version` (`display_version`).
    pub version: String,
    pub is_delta_payload: bool,
    pub disable_payload_backoff: bool,
    pub metadata_size: Option<u64>,
    pub metadata_signature_rsa: Option<String>,
    pub max_failure_count_per_url: Option<u32>,
    pub poll_interval: Option<u32>,
    /// The postinstall action's other attributes, Keel's own (`KeelKeyId`, `KeelVersion`)
    /// among them.
    pub action_extra: Extra,
}

fn bare_appid(id: &str) -> String {
    id.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_ascii_lowercase()
}

/// The app update_engine would read: the one with `appid` (braces and case ignored), else,
/// as update_engine's XPath does, the first that has an `<updatecheck>`.
fn select_app<'a>(response: &'a Response, appid: &str) -> Option<&'a AppResponse> {
    let want = bare_appid(appid);
    response
        .apps
        .iter()
        .find(|a| bare_appid(&a.appid) == want)
        .or_else(|| response.apps.iter().find(|a| a.updatecheck.is_some()))
}

/// update_engine's verdict on a parsed response to an update check for `appid`.
pub fn client_outcome(response: &Response, appid: &str) -> Outcome {
    let invalid = Outcome::Error(ActionCode::OMAHA_RESPONSE_INVALID);
    let Some(check) = select_app(response, appid).and_then(|a| a.updatecheck.as_ref()) else {
        return invalid;
    };
    match check.status {
        Some(UpdateStatus::NoUpdate) => {
            return Outcome::NoUpdate {
                poll_interval: check.poll_interval,
            }
        }
        Some(UpdateStatus::Ok) => {}
        _ => return invalid,
    }
    // ParseUrls: at least one url, none with an empty codebase.
    if check.urls.is_empty() || check.urls.iter().any(|u| u.codebase.is_empty()) {
        return invalid;
    }
    // ParsePackage: the first package (of any manifest, as the XPath reads), a name, size > 0.
    let Some(package) = check.manifests.iter().flat_map(|m| &m.packages).next() else {
        return invalid;
    };
    if package.name.is_empty() {
        return invalid;
    }
    let size = match package.size {
        Some(s) if s > 0 => s,
        _ => return invalid,
    };
    // ParseParams: the first manifest's version; the first postinstall action with a sha256.
    let Some(manifest) = check.manifests.first() else {
        return invalid;
    };
    let postinstall: Option<&Action> = check
        .manifests
        .iter()
        .flat_map(|m| &m.actions)
        .find(|a| a.event == "postinstall");
    let Some(action) = postinstall else {
        return invalid;
    };
    let sha256 = match action.sha256.as_deref() {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => return invalid,
    };
    let urls: Vec<String> = check
        .urls
        .iter()
        .map(|u| {
            let sep = if u.codebase.ends_with('/') { "" } else { "/" };
            format!("{}{sep}{}", u.codebase, package.name)
        })
        .collect();
    Outcome::UpdateAvailable(Box::new(Update {
        url: urls[0].clone(),
        urls,
        size,
        sha256,
        hash_sha1: package.hash.clone(),
        hash_sha256: package.hash_sha256.clone(),
        package_name: package.name.clone(),
        version: manifest.version.clone(),
        is_delta_payload: action.is_delta_payload == Some(true),
        disable_payload_backoff: action.disable_payload_backoff == Some(true),
        metadata_size: action.metadata_size,
        metadata_signature_rsa: action.metadata_signature_rsa.clone(),
        max_failure_count_per_url: action.max_failure_count_per_url,
        poll_interval: check.poll_interval,
        action_extra: action.extra.clone(),
    }))
}

/// update_engine's verdict on a response body (HTTP 200) to an update check: an empty body
/// is 30, malformed XML 31, anything else is judged by [`client_outcome`].
pub fn client_outcome_from_body(body: &[u8], appid: &str) -> Outcome {
    match parse_response(body) {
        Ok(r) => client_outcome(&r, appid),
        Err(e) => Outcome::Error(e.action_code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(updatecheck: &str) -> Outcome {
        let body =
            format!(r#"<response><app appid="a" status="ok">{updatecheck}</app></response>"#);
        client_outcome_from_body(body.as_bytes(), "a")
    }

    const INVALID: Outcome = Outcome::Error(ActionCode::OMAHA_RESPONSE_INVALID);

    #[test]
    fn each_missing_part_is_34() {
        let full = |urls: &str, pkg: &str, act: &str| {
            format!(
                r#"<updatecheck status="ok"><urls>{urls}</urls><manifest version="1"><packages>{pkg}</packages><actions>{act}</actions></manifest></updatecheck>"#
            )
        };
        let url = r#"<url codebase="http://h/p"/>"#;
        let pkg = r#"<package name="f" size="9"/>"#;
        let act = r#"<action event="postinstall" sha256="S"/>"#;
        assert!(
            matches!(outcome(&full(url, pkg, act)), Outcome::UpdateAvailable(u) if u.url == "http://h/p/f")
        );
        assert_eq!(outcome(&full("", pkg, act)), INVALID);
        assert_eq!(outcome(&full(r#"<url codebase=""/>"#, pkg, act)), INVALID);
        assert_eq!(outcome(&full(url, "", act)), INVALID);
        assert_eq!(outcome(&full(url, r#"<package size="9"/>"#, act)), INVALID);
        assert_eq!(
            outcome(&full(url, r#"<package name="f" size="0"/>"#, act)),
            INVALID
        );
        assert_eq!(
            outcome(&full(url, r#"<package name="f" size="-1"/>"#, act)),
            INVALID
        );
        assert_eq!(outcome(&full(url, pkg, "")), INVALID);
        assert_eq!(
            outcome(&full(url, pkg, r#"<action event="update"/>"#)),
            INVALID
        );
        assert_eq!(
            outcome(&full(url, pkg, r#"<action event="postinstall"/>"#)),
            INVALID
        );
        assert_eq!(outcome(""), INVALID);
        assert_eq!(
            outcome(r#"<updatecheck status="error-internal"/>"#),
            INVALID
        );
    }

    #[test]
    fn noupdate_carries_the_poll_interval() {
        assert_eq!(
            outcome(r#"<updatecheck status="noupdate" PollInterval="600"/>"#),
            Outcome::NoUpdate {
                poll_interval: Some(600)
            }
        );
    }

    #[test]
    fn the_app_is_chosen_by_id_then_by_having_an_updatecheck() {
        let body = br#"<response><app appid="{AA}"><event status="ok"/></app><app appid="bb"><updatecheck status="noupdate"/></app></response>"#;
        // "aa" has no updatecheck: refused, not answered from the other app.
        assert_eq!(client_outcome_from_body(body, "aa"), INVALID);
        // An id the response does not name: update_engine's first updatecheck.
        assert!(matches!(
            client_outcome_from_body(body, "zz"),
            Outcome::NoUpdate { .. }
        ));
    }
}
