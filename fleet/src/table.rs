//! fleetctl's tables: Go's `tabwriter` with a tab as padding (minwidth 0, tabwidth 8,
//! padding 1), so columns line up on tab stops exactly as fleetctl's did.

/// Rows (the first is the legend, when shown) laid out as fleetctl prints them.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                // The column is its widest cell plus one, rounded up to a tab stop.
                let width = (widths[i] + 1).div_ceil(8) * 8;
                let tabs = (width - cell.chars().count()).div_ceil(8);
                out.push_str(&"\t".repeat(tabs));
            }
        }
        out.push('\n');
    }
    out
}

/// fleetctl's machine legend: `abcdef12...` (or the whole id with `--full`), then `/ip`.
pub fn machine_legend(id: &str, ip: Option<&str>, full: bool) -> String {
    let mut s = if full || id.len() <= 8 {
        id.to_string()
    } else {
        format!("{}...", &id[..8])
    };
    if let Some(ip) = ip.filter(|ip| !ip.is_empty()) {
        s.push('/');
        s.push_str(ip);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_tab_stops() {
        let rows = vec![
            vec!["UNIT".to_string(), "MACHINE".into(), "ACTIVE".into()],
            vec![
                "hello.service".to_string(),
                "113f16a7.../172.17.8.103".into(),
                "active".into(),
            ],
        ];
        assert_eq!(
            render(&rows),
            "UNIT\t\tMACHINE\t\t\t\tACTIVE\nhello.service\t113f16a7.../172.17.8.103\tactive\n"
        );
        assert_eq!(
            machine_legend("113f16a7b2d34cf0", Some("172.17.8.103"), false),
            "113f16a7.../172.17.8.103"
        );
        assert_eq!(
            machine_legend("113f16a7b2d34cf0", None, true),
            "113f16a7b2d34cf0"
        );
    }
}
