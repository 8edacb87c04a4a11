//! The operators' web page: server-rendered HTML, no script. Groups with their version
//! breakdown and rollout progress, a searchable instance list, the activity log.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::store::{Group, Instance, InstanceFilter, Store, StoreError};

/// Text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn time(t: i64) -> String {
    jiff::Timestamp::from_second(t).map_or_else(|_| t.to_string(), |ts| ts.to_string())
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}\
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:4px 8px;\
text-align:left;vertical-align:top}th{background:#f4f4f4}\
.bar{display:flex;height:12px;width:220px;background:#eee;border-radius:3px;overflow:hidden}\
.bar span{display:block;height:100%}.v0{background:#2b7de9}.v1{background:#8fb8f0}\
.v2{background:#c9dcf7}.v3{background:#ddd}.paused{color:#b00;font-weight:bold}\
.error{color:#b00}.complete{color:#070}form input{margin-right:.5em}small{color:#666}";

/// The dashboard for `filter` (the instance search form's values); `token` is carried in the
/// form so a search keeps it.
pub fn render(
    store: &dyn Store,
    filter: &InstanceFilter,
    token: Option<&str>,
    now: i64,
) -> Result<String, StoreError> {
    let groups = store.groups()?;
    let everyone = store.search(&InstanceFilter {
        limit: Some(u32::MAX),
        ..Default::default()
    })?;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Keel update service</title><style>{STYLE}</style></head><body>\
         <h1>Keel update service</h1><p><small>{} · {} machines</small></p>",
        esc(&time(now)),
        everyone.len()
    );
    h.push_str(
        "<h2>Groups</h2><table id=\"groups\"><thead><tr><th>group</th><th>channel</th>\
         <th>offered</th><th>policy</th><th>machines by version</th><th>rollout</th></tr></thead><tbody>",
    );
    for g in &groups {
        group_row(&mut h, store, g, &everyone, now)?;
    }
    h.push_str("</tbody></table>");

    let shown = store.search(filter)?;
    let v = |o: &Option<String>| esc(o.as_deref().unwrap_or(""));
    let _ = write!(
        h,
        "<h2>Instances</h2><form method=\"get\" action=\"/dashboard\">\
         <input name=\"q\" placeholder=\"machine id or alias\" value=\"{}\">\
         <input name=\"group\" placeholder=\"group\" value=\"{}\">\
         <input name=\"status\" placeholder=\"status\" value=\"{}\">{}\
         <button type=\"submit\">search</button></form>\
         <table id=\"instances\"><thead><tr><th>machine</th><th>alias</th><th>group</th>\
         <th>version</th><th>status</th><th>first seen</th><th>last seen</th></tr></thead><tbody>",
        v(&filter.q),
        v(&filter.group),
        v(&filter.status),
        token.map_or(String::new(), |t| format!(
            "<input type=\"hidden\" name=\"token\" value=\"{}\">",
            esc(t)
        )),
    );
    for i in &shown {
        let status = match i.error_code {
            Some(c) => format!("{} {c}", i.status),
            None => i.status.clone(),
        };
        let _ = write!(
            h,
            "<tr id=\"instance-{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&i.machine_id),
            esc(&i.machine_id),
            esc(i.alias.as_deref().unwrap_or("")),
            esc(&i.group),
            esc(&i.version),
            esc(&i.status),
            esc(&status),
            esc(&time(i.first_seen)),
            esc(&time(i.last_seen)),
        );
    }
    if shown.is_empty() {
        h.push_str("<tr><td colspan=\"7\">no machines match</td></tr>");
    }
    h.push_str("</tbody></table><h2>Activity</h2><table id=\"activity\"><tbody>");
    for a in store.activity(30)? {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&time(a.at)),
            esc(&a.kind),
            esc(&a.subject),
            esc(&a.message)
        );
    }
    h.push_str("</tbody></table></body></html>\n");
    Ok(h)
}

fn group_row(
    h: &mut String,
    store: &dyn Store,
    g: &Group,
    everyone: &[Instance],
    now: i64,
) -> Result<(), StoreError> {
    let package = store.channel_package(keel_omaha::KEEL_APP_ID, &g.channel)?;
    let members: Vec<&Instance> = everyone.iter().filter(|i| i.group == g.name).collect();
    let mut versions: BTreeMap<&str, usize> = BTreeMap::new();
    for i in &members {
        *versions.entry(i.version.as_str()).or_default() += 1;
    }
    let mut by_count: Vec<(&str, usize)> = versions.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(a.0)));
    let total = members.len().max(1);
    let mut bar = String::from("<div class=\"bar\">");
    let mut legend = Vec::new();
    for (n, (version, count)) in by_count.iter().enumerate() {
        let _ = write!(
            bar,
            "<span class=\"v{}\" style=\"width:{}%\" title=\"{}\"></span>",
            n.min(3),
            count * 100 / total,
            esc(version)
        );
        legend.push(format!("{}: {count}", esc(version)));
    }
    bar.push_str("</div>");
    let p = &g.policy;
    let mut policy = Vec::new();
    if p.paused {
        policy.push("<span class=\"paused\">paused</span>".to_owned());
    }
    if let Some(m) = p.max_updates_per_period {
        policy.push(format!("{m} per {} s", p.period_seconds));
    }
    if p.office_hours {
        policy.push(format!("office hours {}", esc(&p.timezone)));
    }
    if p.safe_mode {
        policy.push(format!("safe mode ({} failures)", p.safe_mode_failures));
    }
    if g.allow_downgrade {
        policy.push("downgrades allowed".into());
    }
    let (offered, rollout) = match &package {
        Some(pkg) => {
            let c = store.rollout(g, &pkg.version, now)?;
            let on = members.iter().filter(|i| i.version == pkg.version).count();
            (
                esc(&pkg.version),
                format!(
                    "{on} of {} on {}; {} updating, {} failed, {} timed out",
                    members.len(),
                    esc(&pkg.version),
                    c.in_progress,
                    c.failed,
                    c.timed_out
                ),
            )
        }
        None => ("–".to_owned(), "nothing published".to_owned()),
    };
    let _ = write!(
        h,
        "<tr id=\"group-{}\"><td>{}</td><td>{}</td><td class=\"offered\">{}</td><td>{}</td>\
         <td>{bar}<small class=\"versions\">{}</small></td><td class=\"rollout\">{}</td></tr>",
        esc(&g.name),
        esc(&g.name),
        esc(&g.channel),
        offered,
        if policy.is_empty() {
            "–".to_owned()
        } else {
            policy.join(", ")
        },
        legend.join(", "),
        rollout
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes() {
        assert_eq!(
            super::esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
