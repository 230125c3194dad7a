//! Globs on subjects and claims (SPEC §11): `*` matches within one `/`-separated segment,
//! `**` matches across segments, everything else is literal.

/// Longest pattern accepted (config-time budget; matching is O(pattern × input)).
pub const MAX_GLOB_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Lit(char),
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**`: any run of characters.
    DoubleStar,
}

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("pattern is longer than {MAX_GLOB_LEN} bytes")]
    TooLong,
    #[error("`***` is ambiguous")]
    TripleStar,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Self, GlobError> {
        if pattern.len() > MAX_GLOB_LEN {
            return Err(GlobError::TooLong);
        }
        if pattern.contains("***") {
            return Err(GlobError::TripleStar);
        }
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '*' {
                if chars.peek() == Some(&'*') {
                    chars.next();
                    tokens.push(Token::DoubleStar);
                } else {
                    tokens.push(Token::Star);
                }
            } else {
                tokens.push(Token::Lit(c));
            }
        }
        Ok(Self {
            source: pattern.to_owned(),
            tokens,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `input` matches.
    pub fn matches(&self, input: &str) -> bool {
        // The literal run up to the first star is compared as a string: most patterns
        // refuse most subjects right there, and a pattern without stars is equality.
        let lead = self
            .tokens
            .iter()
            .position(|t| !matches!(t, Token::Lit(_)))
            .unwrap_or(self.tokens.len());
        let (prefix, rest) = self.tokens.split_at(lead);
        let mut text = input.chars();
        for token in prefix {
            match (token, text.next()) {
                (Token::Lit(c), Some(ch)) if *c == ch => {}
                _ => return false,
            }
        }
        if rest.is_empty() {
            return text.next().is_none();
        }
        let text: Vec<char> = text.collect();
        // reach[j]: the tokens so far can consume exactly text[..j]. Two rows, reused.
        let mut reach = vec![false; text.len() + 1];
        let mut next = vec![false; text.len() + 1];
        if let Some(first) = reach.first_mut() {
            *first = true;
        }
        for token in rest {
            next.fill(false);
            match token {
                Token::Lit(c) => {
                    for (j, ch) in text.iter().enumerate() {
                        if reach.get(j) == Some(&true)
                            && ch == c
                            && let Some(n) = next.get_mut(j + 1)
                        {
                            *n = true;
                        }
                    }
                }
                Token::Star | Token::DoubleStar => {
                    let mut carrying = false;
                    for j in 0..=text.len() {
                        if reach.get(j) == Some(&true) {
                            carrying = true;
                        }
                        if let Some(n) = next.get_mut(j) {
                            *n = carrying;
                        }
                        // A single star cannot extend over a '/'.
                        if *token == Token::Star && text.get(j) == Some(&'/') {
                            carrying = false;
                        }
                    }
                }
            }
            std::mem::swap(&mut reach, &mut next);
        }
        reach.last() == Some(&true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matcher before the literal-prefix fast path: every token through the table.
    fn reference(g: &Glob, input: &str) -> bool {
        let text: Vec<char> = input.chars().collect();
        // reach[j]: the tokens so far can consume exactly text[..j].
        let mut reach = vec![false; text.len() + 1];
        if let Some(first) = reach.first_mut() {
            *first = true;
        }
        for token in &g.tokens {
            let mut next = vec![false; text.len() + 1];
            match token {
                Token::Lit(c) => {
                    for (j, ch) in text.iter().enumerate() {
                        if reach.get(j) == Some(&true)
                            && ch == c
                            && let Some(n) = next.get_mut(j + 1)
                        {
                            *n = true;
                        }
                    }
                }
                Token::Star | Token::DoubleStar => {
                    let mut carrying = false;
                    for j in 0..=text.len() {
                        if reach.get(j) == Some(&true) {
                            carrying = true;
                        }
                        if let Some(n) = next.get_mut(j) {
                            *n = carrying;
                        }
                        // A single star cannot extend over a '/'.
                        if *token == Token::Star && text.get(j) == Some(&'/') {
                            carrying = false;
                        }
                    }
                }
            }
            reach = next;
        }
        reach.last() == Some(&true)
    }

    proptest::proptest! {
        #[test]
        fn the_fast_path_agrees_with_the_table(
            pattern in "[ab/*]{0,12}",
            input in "[ab/]{0,16}",
        ) {
            if let Ok(g) = Glob::new(&pattern) {
                proptest::prop_assert_eq!(g.matches(&input), reference(&g, &input));
            }
        }
    }

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p).unwrap().matches(s)
    }

    #[test]
    fn star_stays_in_its_segment() {
        assert!(m(
            "spiffe://a/ns/payments/sa/*",
            "spiffe://a/ns/payments/sa/api"
        ));
        assert!(!m(
            "spiffe://a/ns/payments/sa/*",
            "spiffe://a/ns/payments/sa/api/x"
        ));
        assert!(m(
            "spiffe://a/ns/payments/sa/*",
            "spiffe://a/ns/payments/sa/"
        ));
        assert!(m("spiffe://a/ns/*/sa/api", "spiffe://a/ns/x/sa/api"));
        assert!(!m("spiffe://a/ns/*/sa/api", "spiffe://a/ns/x/y/sa/api"));
        assert!(m("acme/*", "acme/app"));
        assert!(!m("acme/*", "acme/app/x"));
        assert!(!m("acme/*", "acmex/app"));
    }

    #[test]
    fn double_star_crosses_segments() {
        assert!(m("spiffe://a/**", "spiffe://a/ns/x/sa/y"));
        assert!(m("spiffe://a/ns/**/api", "spiffe://a/ns/x/y/api"));
        assert!(!m("spiffe://a/ns/**/api", "spiffe://b/ns/x/y/api"));
        assert!(m("**", ""));
        assert!(m("gh#repo:acme/**", "gh#repo:acme/app:ref:refs/heads/main"));
    }

    #[test]
    fn literals_are_exact() {
        assert!(m("abc", "abc"));
        assert!(!m("abc", "abcd"));
        assert!(!m("abc", "ab"));
        assert!(!m("a.c", "abc"));
        assert!(!m("a?c", "abc"));
        assert!(m("", ""));
        assert!(!m("", "a"));
    }

    #[test]
    fn budgets_and_pathological_input() {
        assert_eq!(
            Glob::new(&"a".repeat(MAX_GLOB_LEN + 1)),
            Err(GlobError::TooLong)
        );
        assert_eq!(Glob::new("a***b"), Err(GlobError::TripleStar));
        let p = "*a".repeat(200);
        assert!(!m(&p, &"a".repeat(199)));
        assert!(m(&p, &"a".repeat(2000)));
    }
}
