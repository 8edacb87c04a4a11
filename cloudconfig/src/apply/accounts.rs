//! `/etc/passwd`, `/etc/group`, `/etc/shadow` as plain lines: read, look up, edit, render.
//! Lines that are not entries (comments, blanks, NIS `+`) are kept verbatim.

/// One colon-separated file; each line split into fields, or kept whole when not an entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    lines: Vec<Line>,
    /// Fields per entry (passwd 7, group 4, shadow 9).
    width: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Line {
    Entry(Vec<String>),
    Other(String),
}

pub const PASSWD_FIELDS: usize = 7;
pub const GROUP_FIELDS: usize = 4;
pub const SHADOW_FIELDS: usize = 9;

impl Table {
    pub fn parse(text: &str, width: usize) -> Table {
        let lines = text
            .lines()
            .map(|l| {
                let f: Vec<String> = l.split(':').map(str::to_string).collect();
                if l.starts_with('#') || l.starts_with('+') || l.starts_with('-') || f.len() < 3 {
                    Line::Other(l.to_string())
                } else {
                    Line::Entry(f)
                }
            })
            .collect();
        Table { lines, width }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            match l {
                Line::Entry(f) => s.push_str(&f.join(":")),
                Line::Other(t) => s.push_str(t),
            }
            s.push('\n');
        }
        s
    }

    fn entries(&self) -> impl Iterator<Item = &Vec<String>> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry(f) => Some(f),
            Line::Other(_) => None,
        })
    }

    /// The entry whose first field is `name`.
    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.entries().find(|f| f[0] == name).map(|f| f.as_slice())
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Vec<String>> {
        self.lines.iter_mut().find_map(|l| match l {
            Line::Entry(f) if f[0] == name => {
                let width = f.len().max(self.width);
                f.resize(width, String::new());
                Some(f)
            }
            _ => None,
        })
    }

    /// The entry whose third field (uid / gid) is `id`.
    pub fn by_id(&self, id: u32) -> Option<&[String]> {
        let id = id.to_string();
        self.entries()
            .find(|f| f.get(2) == Some(&id))
            .map(|f| f.as_slice())
    }

    pub fn ids(&self) -> Vec<u32> {
        self.entries()
            .filter_map(|f| f.get(2)?.parse().ok())
            .collect()
    }

    pub fn push(&mut self, fields: Vec<String>) {
        self.lines.push(Line::Entry(fields));
    }
}

/// uid / gid ranges, as Flatcar's login.defs sets them.
pub const SYSTEM_IDS: (u32, u32) = (101, 999);
pub const USER_IDS: (u32, u32) = (1000, 60000);

/// The lowest id in `range` that neither table uses (passwd uids, group gids).
pub fn free_id(range: (u32, u32), used: &[Vec<u32>]) -> Option<u32> {
    (range.0..=range.1).find(|id| used.iter().all(|u| !u.contains(id)))
}

/// Parse a field as a number.
pub fn id(field: Option<&String>) -> Option<u32> {
    field?.parse().ok()
}

/// Resolve an owner `user`, `user:group`, `:group`, or numeric ids, against passwd and group.
pub fn owner(spec: &str, passwd: &Table, group: &Table) -> Result<(u32, u32), String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid_and_gid = |u: &str| -> Result<(u32, u32), String> {
        if let Ok(n) = u.parse::<u32>() {
            let gid = passwd.by_id(n).and_then(|e| id(e.get(3))).unwrap_or(n);
            return Ok((n, gid));
        }
        let e = passwd
            .get(u)
            .ok_or_else(|| format!("user {u:?} is not in /etc/passwd"))?;
        Ok((
            id(e.get(2)).ok_or_else(|| format!("user {u:?} has no numeric uid"))?,
            id(e.get(3)).ok_or_else(|| format!("user {u:?} has no numeric gid"))?,
        ))
    };
    let (uid, default_gid) = if user.is_empty() {
        (0, 0)
    } else {
        uid_and_gid(user)?
    };
    let gid = match grp {
        None | Some("") => default_gid,
        Some(g) => group_id(g, group)?,
    };
    Ok((uid, gid))
}

/// A group name or number → gid.
pub fn group_id(g: &str, group: &Table) -> Result<u32, String> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    group
        .get(g)
        .and_then(|e| id(e.get(2)))
        .ok_or_else(|| format!("group {g:?} is not in /etc/group"))
}

/// Add `user` to the member list of group `g`; false when it already was.
pub fn add_member(group: &mut Table, g: &str, user: &str) -> bool {
    let Some(e) = group.get_mut(g) else {
        return false;
    };
    let mut members: Vec<&str> = e[3].split(',').filter(|m| !m.is_empty()).collect();
    if members.contains(&user) {
        return false;
    }
    members.push(user);
    e[3] = members.join(",");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\n# note\ncore:x:500:500:Keel Admin:/home/core:/bin/bash\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root\ncore:x:500:\n";

    #[test]
    fn round_trips_and_looks_up() {
        let p = Table::parse(PASSWD, PASSWD_FIELDS);
        assert_eq!(p.render(), PASSWD);
        assert_eq!(p.get("core").unwrap()[5], "/home/core");
        assert_eq!(p.by_id(0).unwrap()[0], "root");
        assert_eq!(p.ids(), vec![0, 500]);
    }

    #[test]
    fn owners() {
        let p = Table::parse(PASSWD, PASSWD_FIELDS);
        let g = Table::parse(GROUP, GROUP_FIELDS);
        assert_eq!(owner("core", &p, &g), Ok((500, 500)));
        assert_eq!(owner("core:wheel", &p, &g), Ok((500, 10)));
        assert_eq!(owner("root:root", &p, &g), Ok((0, 0)));
        assert_eq!(owner("1234:5", &p, &g), Ok((1234, 5)));
        assert!(owner("nobody", &p, &g).unwrap_err().contains("nobody"));
        assert!(owner("core:nogroup", &p, &g)
            .unwrap_err()
            .contains("nogroup"));
    }

    #[test]
    fn members_and_free_ids() {
        let mut g = Table::parse(GROUP, GROUP_FIELDS);
        assert!(add_member(&mut g, "wheel", "core"));
        assert!(!add_member(&mut g, "wheel", "core"));
        assert!(add_member(&mut g, "core", "x"));
        assert_eq!(g.get("wheel").unwrap()[3], "root,core");
        assert_eq!(g.get("core").unwrap()[3], "x");
        assert_eq!(free_id((500, 510), &[vec![500, 501], vec![502]]), Some(503));
    }
}
