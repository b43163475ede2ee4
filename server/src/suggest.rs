//! "Did you mean …?": the known name closest to a mistyped one.

/// The candidate closest to `wanted`, if one is close enough to be what was meant:
/// similar (Jaro-Winkler), one or two typing slips away (more for longer names), or
/// the only name that contains it.
pub fn closest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(f64, &str)> = None;
    let mut containing = Vec::new();
    for c in candidates {
        if c == wanted {
            continue;
        }
        if wanted.len() >= 3 && c.contains(wanted) {
            containing.push(c);
        }
        // A slip or two (`wev` for `web`, `corutils`) counts as close, however short.
        let slips = strsim::damerau_levenshtein(wanted, c);
        let allowed = if wanted.len() >= 3 {
            1 + wanted.len() / 6
        } else {
            0
        };
        let score = if slips <= allowed {
            1.0 - slips as f64 / 100.0
        } else {
            strsim::jaro_winkler(wanted, c)
        };
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    match best {
        // 0.85: `bsah` → `bash`, `libssl` → `libssl3`; not `vim` → `nginx`.
        Some((score, c)) if score >= 0.85 => Some(c),
        _ if containing.len() == 1 => Some(containing[0]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn suggests_near_names_only() {
        let names = ["bash", "coreutils", "libssl3", "nginx-light", "web"];
        assert_eq!(closest("bsah", names), Some("bash"));
        assert_eq!(closest("coreutil", names), Some("coreutils"));
        assert_eq!(closest("libssl", names), Some("libssl3"));
        assert_eq!(closest("nginx", names), Some("nginx-light"));
        assert_eq!(closest("wev", names), Some("web"));
        assert_eq!(closest("corutils", names), Some("coreutils"));
        assert_eq!(closest("vim", names), None);
        assert_eq!(closest("pg", names), None);
        assert_eq!(closest("bash", names), None);
    }
}
