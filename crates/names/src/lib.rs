//! Domain names and name patterns, as an operator types them into the
//! configuration (`teams.example`, `*.teams.example`), and the one
//! matcher every name-keyed list in Strait uses: the DNS forwarder's
//! accelerated names and conditional-forwarding suffixes, and the SNI
//! proxy's allowlist.
//!
//! Matching follows RFC 4592's reading of a wildcard: `*.example.com`
//! stands for every descendant of `example.com` (any number of labels),
//! never for `example.com` itself; an exact name beats a wildcard; among
//! wildcards the longest suffix wins. Names compare case-insensitively
//! (RFC 4343) and a trailing dot is ignored.
//!
//! ```
//! use strait_names::{Name, NameSet, Pattern};
//! let mut set = NameSet::new();
//! set.insert("*.teams.example".parse::<Pattern>()?, "tunnel");
//! set.insert("status.teams.example".parse::<Pattern>()?, "direct");
//! let name: Name = "EU.Teams.Example.".parse()?;
//! assert_eq!(set.get(&name).map(|m| *m.value), Some("tunnel"));
//! assert_eq!(set.get(&"status.teams.example".parse()?).map(|m| *m.value), Some("direct"));
//! assert!(set.get(&"teams.example".parse()?).is_none());
//! # Ok::<(), strait_names::NameError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// The longest name in its text form without the trailing dot
/// (RFC 1035 §3.1: 255 octets on the wire).
pub const MAX_NAME: usize = 253;
/// The longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL: usize = 63;

/// Why a name or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing but dots.
    #[error("empty name")]
    Empty,
    /// Longer than [`MAX_NAME`].
    #[error("name longer than {MAX_NAME} characters")]
    TooLong,
    /// Two dots in a row, or a leading dot.
    #[error("empty label")]
    EmptyLabel,
    /// A label longer than [`MAX_LABEL`].
    #[error("label longer than {MAX_LABEL} characters")]
    LabelTooLong,
    /// A character outside letters, digits, `-` and `_`.
    #[error(
        "character {0:?} is not allowed in a name (letters, digits, '-', '_'; IDNs as xn-- labels)"
    )]
    BadCharacter(char),
    /// A `*` anywhere but as the whole first label.
    #[error("'*' is only allowed as the whole first label (*.example.com)")]
    MisplacedWildcard,
}

/// A domain name: lowercase ASCII labels, no trailing dot. The root is not
/// a `Name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// The name as text, lowercase, without the trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its labels, leftmost first.
    pub fn labels(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.0.split('.')
    }

    /// How many labels it has.
    pub fn label_count(&self) -> usize {
        self.0.bytes().filter(|&b| b == b'.').count() + 1
    }

    /// The name with its first label removed (`None` for a single label).
    pub fn parent(&self) -> Option<Name> {
        self.0
            .split_once('.')
            .map(|(_, rest)| Name(rest.to_owned()))
    }

    /// Whether `self` is `ancestor` or one of its descendants.
    pub fn is_at_or_below(&self, ancestor: &Name) -> bool {
        self.0 == ancestor.0
            || (self.0.len() > ancestor.0.len()
                && self.0.ends_with(ancestor.0.as_str())
                && self.0.as_bytes()[self.0.len() - ancestor.0.len() - 1] == b'.')
    }

    /// Every suffix of the name that is itself a name, longest (the name)
    /// first: `a.b.c`, `b.c`, `c`.
    pub fn suffixes(&self) -> impl Iterator<Item = &str> {
        let s = self.0.as_str();
        std::iter::once(s).chain(s.match_indices('.').map(move |(i, _)| &s[i + 1..]))
    }

    /// Parses one name from its text (case and a trailing dot ignored).
    fn parse_labels(text: &str, allow_wildcard: bool) -> Result<(bool, Name), NameError> {
        let text = text.strip_suffix('.').unwrap_or(text);
        if text.is_empty() {
            return Err(NameError::Empty);
        }
        let (wildcard, rest) = match text.strip_prefix('*') {
            Some("") if allow_wildcard => return Ok((true, Name(String::new()))),
            Some(rest) if allow_wildcard => match rest.strip_prefix('.') {
                Some(rest) => (true, rest),
                None => return Err(NameError::MisplacedWildcard),
            },
            _ => (false, text),
        };
        if rest.len() > MAX_NAME {
            return Err(NameError::TooLong);
        }
        let mut out = String::with_capacity(rest.len());
        for (i, label) in rest.split('.').enumerate() {
            if label.is_empty() {
                return Err(NameError::EmptyLabel);
            }
            if label.len() > MAX_LABEL {
                return Err(NameError::LabelTooLong);
            }
            if i > 0 {
                out.push('.');
            }
            for c in label.chars() {
                match c {
                    'a'..='z' | '0'..='9' | '-' | '_' => out.push(c),
                    'A'..='Z' => out.push(c.to_ascii_lowercase()),
                    '*' => return Err(NameError::MisplacedWildcard),
                    other => return Err(NameError::BadCharacter(other)),
                }
            }
        }
        Ok((wildcard, Name(out)))
    }
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Name, NameError> {
        Name::parse_labels(s, false).map(|(_, n)| n)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name as a list entry: one exact name, or `*.suffix` for every
/// descendant of `suffix` (`*` alone: every name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// Just this name.
    Exact(Name),
    /// Every descendant of this suffix, not the suffix itself. The empty
    /// suffix (the pattern `*`) is every name.
    Wildcard(Name),
}

impl Pattern {
    /// Whether `name` matches.
    pub fn matches(&self, name: &Name) -> bool {
        match self {
            Pattern::Exact(n) => n == name,
            Pattern::Wildcard(s) if s.0.is_empty() => true,
            Pattern::Wildcard(s) => name != s && name.is_at_or_below(s),
        }
    }
}

impl FromStr for Pattern {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Pattern, NameError> {
        let (wildcard, name) = Name::parse_labels(s, true)?;
        Ok(if wildcard {
            Pattern::Wildcard(name)
        } else {
            Pattern::Exact(name)
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(n) => write!(f, "{n}"),
            Pattern::Wildcard(s) if s.0.is_empty() => f.write_str("*"),
            Pattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// What a lookup found: the pattern that decided it and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match<'a, T> {
    /// The entry's pattern.
    pub pattern: &'a Pattern,
    /// The entry's value.
    pub value: &'a T,
}

/// Patterns with a value each. A lookup costs one hash probe per label of
/// the name, whatever the number of entries.
#[derive(Debug, Clone)]
pub struct NameSet<T> {
    exact: HashMap<String, (Pattern, T)>,
    /// Keyed by the suffix ("" for `*`).
    wildcard: HashMap<String, (Pattern, T)>,
}

impl<T> Default for NameSet<T> {
    fn default() -> Self {
        NameSet {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<T> NameSet<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; an entry with the same pattern is replaced and its
    /// value returned.
    pub fn insert(&mut self, pattern: Pattern, value: T) -> Option<T> {
        let (map, key) = match &pattern {
            Pattern::Exact(n) => (&mut self.exact, n.0.clone()),
            Pattern::Wildcard(s) => (&mut self.wildcard, s.0.clone()),
        };
        map.insert(key, (pattern, value)).map(|(_, v)| v)
    }

    /// The entry deciding `name`: its exact entry, else the wildcard with
    /// the longest suffix above it.
    pub fn get(&self, name: &Name) -> Option<Match<'_, T>> {
        let found = self.exact.get(name.as_str()).or_else(|| {
            name.suffixes()
                .skip(1)
                .chain(std::iter::once(""))
                .find_map(|s| self.wildcard.get(s))
        });
        found.map(|(pattern, value)| Match { pattern, value })
    }

    /// Whether any entry matches `name`.
    pub fn contains(&self, name: &Name) -> bool {
        self.get(name).is_some()
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Pattern, &T)> {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .map(|(p, v)| (p, v))
    }
}

impl<T> FromIterator<(Pattern, T)> for NameSet<T> {
    fn from_iter<I: IntoIterator<Item = (Pattern, T)>>(iter: I) -> Self {
        let mut set = NameSet::new();
        for (p, v) in iter {
            set.insert(p, v);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> Name {
        s.parse().unwrap()
    }

    #[test]
    fn names_are_normalised_and_checked() {
        assert_eq!(name("WWW.Example.COM.").as_str(), "www.example.com");
        assert_eq!("".parse::<Name>(), Err(NameError::Empty));
        assert_eq!(".".parse::<Name>(), Err(NameError::Empty));
        assert_eq!("a..b".parse::<Name>(), Err(NameError::EmptyLabel));
        assert_eq!(".a".parse::<Name>(), Err(NameError::EmptyLabel));
        assert_eq!(
            format!("{}.com", "a".repeat(64)).parse::<Name>(),
            Err(NameError::LabelTooLong)
        );
        assert_eq!(
            vec!["abcdefghi"; 26].join(".").parse::<Name>(),
            Err(NameError::TooLong)
        );
        assert_eq!("a b.com".parse::<Name>(), Err(NameError::BadCharacter(' ')));
        assert_eq!("*.a.com".parse::<Name>(), Err(NameError::MisplacedWildcard));
        assert_eq!(
            "a.*.com".parse::<Pattern>(),
            Err(NameError::MisplacedWildcard)
        );
        assert_eq!(
            "*a.com".parse::<Pattern>(),
            Err(NameError::MisplacedWildcard)
        );
        assert_eq!(name("xn--bcher-kva.example").label_count(), 2);
        assert_eq!(name("a.b.c").parent(), Some(name("b.c")));
        assert_eq!(name("c").parent(), None);
    }

    #[test]
    fn a_wildcard_covers_descendants_not_its_apex() {
        let p: Pattern = "*.example.com".parse().unwrap();
        assert!(p.matches(&name("a.example.com")));
        assert!(p.matches(&name("a.b.example.com")));
        assert!(!p.matches(&name("example.com")));
        assert!(!p.matches(&name("badexample.com")));
        assert!(!p.matches(&name("com")));
        let all: Pattern = "*".parse().unwrap();
        assert!(all.matches(&name("anything.at.all")));
        assert_eq!(all.to_string(), "*");
        assert_eq!(p.to_string(), "*.example.com");
    }

    #[test]
    fn exact_beats_wildcard_and_the_longest_suffix_wins() {
        let set: NameSet<u8> = [
            ("*", 0),
            ("*.example.com", 1),
            ("*.eu.example.com", 2),
            ("eu.example.com", 3),
            ("www.eu.example.com", 4),
        ]
        .into_iter()
        .map(|(p, v)| (p.parse().unwrap(), v))
        .collect();
        let got = |s: &str| set.get(&name(s)).map(|m| *m.value);
        assert_eq!(got("www.eu.example.com"), Some(4));
        assert_eq!(got("mail.eu.example.com"), Some(2));
        assert_eq!(got("a.b.eu.example.com"), Some(2));
        assert_eq!(got("eu.example.com"), Some(3));
        assert_eq!(got("us.example.com"), Some(1));
        assert_eq!(got("example.com"), Some(0));
        assert_eq!(got("other.net"), Some(0));
        assert_eq!(set.len(), 5);
    }

    #[test]
    fn inserting_a_pattern_again_replaces_it() {
        let mut set = NameSet::new();
        assert_eq!(set.insert("*.a.com".parse().unwrap(), 1), None);
        assert_eq!(set.insert("*.A.com.".parse().unwrap(), 2), Some(1));
        assert_eq!(set.len(), 1);
        assert!(!set.contains(&name("a.com")));
    }

    proptest! {
        /// The set's answer is the one a scan over every pattern gives.
        #[test]
        fn lookup_agrees_with_a_scan(
            patterns in proptest::collection::vec("(\\*\\.)?([abc]\\.){0,3}[abc]", 0..12),
            query in "([abc]\\.){0,4}[abc]",
        ) {
            let patterns: Vec<Pattern> = patterns.iter().map(|p| p.parse().unwrap()).collect();
            let set: NameSet<usize> = patterns.iter().cloned().enumerate().map(|(i, p)| (p, i)).collect();
            let q = name(&query);
            let rank = |p: &Pattern| match p {
                Pattern::Exact(_) => usize::MAX,
                Pattern::Wildcard(s) => s.as_str().len(),
            };
            let best = patterns.iter().filter(|p| p.matches(&q)).max_by_key(|p| rank(p));
            prop_assert_eq!(set.get(&q).map(|m| m.pattern), best);
        }
    }
}
