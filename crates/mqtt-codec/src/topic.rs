//! Topic names and filters: validation (spec 4.7) and matching, including the `$`-topic rule and
//! shared subscriptions (`$share/{group}/{filter}`, spec 4.8.2).

/// Longest topic or filter in bytes (a UTF-8 string is length-prefixed by a u16).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// A topic name a client may publish to: non-empty, no wildcards, no NUL.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && !topic.bytes().any(|b| b == b'+' || b == b'#' || b == 0)
}

/// A topic filter: non-empty; `+` fills a whole level; `#` fills the whole last level; no NUL.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_TOPIC_LEN || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !last) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// Whether `filter` contains a wildcard.
pub fn has_wildcard(filter: &str) -> bool {
    filter.bytes().any(|b| b == b'+' || b == b'#')
}

/// Splits a shared subscription `$share/{group}/{filter}` into `(group, filter)`.
///
/// Returns `None` for a filter that is not shared, `Some(Err(()))` for a malformed shared one
/// (empty or wildcard group name, missing or invalid filter).
#[allow(clippy::result_unit_err)]
pub fn parse_shared(filter: &str) -> Option<Result<(&str, &str), ()>> {
    let rest = filter.strip_prefix("$share/")?;
    let Some((group, inner)) = rest.split_once('/') else {
        return Some(Err(()));
    };
    if group.is_empty() || group.contains(['+', '#']) || !valid_filter(inner) {
        return Some(Err(()));
    }
    Some(Ok((group, inner)))
}

/// Whether `topic` matches `filter` (both already valid).
///
/// A filter starting with a wildcard does not match a topic starting with `$` (spec 4.7.2).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        for ok in [
            "a", "a/b", "+", "#", "a/+/c", "a/#", "+/+", "/", "$SYS/#", "a//b",
        ] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a+", "a/b#", "#/a", "a\0b", "++"] {
            assert!(!valid_filter(bad), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert!(valid_topic_name("a/b"));
        assert!(valid_topic_name("/"));
        for bad in ["", "a/+", "#", "a\0"] {
            assert!(!valid_topic_name(bad));
        }
    }

    #[test]
    fn matching() {
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(matches("+", ""));
        assert!(!matches("+", "a/b"));
        assert!(matches("+/+", "/a"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(!matches("a/b", "a"));
        assert!(!matches("a", "a/b"));
    }

    #[test]
    fn shared() {
        assert_eq!(parse_shared("a/b"), None);
        assert_eq!(parse_shared("$share/g/a/#"), Some(Ok(("g", "a/#"))));
        assert_eq!(parse_shared("$share/g"), Some(Err(())));
        assert_eq!(parse_shared("$share//a"), Some(Err(())));
        assert_eq!(parse_shared("$share/g+/a"), Some(Err(())));
    }
}
