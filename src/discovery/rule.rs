//! Traefik router rules (`Host(...)`, `Path(...)`, `PathPrefix(...)`, `&&`,
//! `||`, parentheses) turned into the host + path prefix pairs Fulcrum routes on.
//! Anything else (other matchers, `!`, two hosts in one conjunction) is refused
//! with a reason, never guessed at.

/// One way a rule matches: an optional host and a path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Match {
    pub(crate) host: Option<String>,
    pub(crate) path: String,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Open,
    Close,
    Comma,
    And,
    Or,
    Not,
}

/// A conjunction being built: at most one host and one path survive.
#[derive(Clone, Debug, Default)]
struct Conj {
    hosts: Vec<String>,
    paths: Vec<String>,
}

/// The most alternatives a rule may expand to.
const MAX_ALTERNATIVES: usize = 64;

/// Parses a rule into its alternatives.
pub(crate) fn parse(rule: &str) -> Result<Vec<Match>, String> {
    let toks = tokenize(rule)?;
    let mut p = Parser { toks, pos: 0 };
    let dnf = p.expr()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected {:?} in rule", p.toks[p.pos]));
    }
    let mut out = Vec::new();
    for c in dnf {
        let mut hosts = c.hosts;
        hosts.sort();
        hosts.dedup();
        let mut paths = c.paths;
        paths.sort();
        paths.dedup();
        if hosts.len() > 1 {
            return Err(format!(
                "a rule requires two hosts at once ({})",
                hosts.join(", ")
            ));
        }
        if paths.len() > 1 {
            return Err(format!(
                "a rule requires two paths at once ({})",
                paths.join(", ")
            ));
        }
        let m = Match {
            host: hosts.pop(),
            path: paths.pop().unwrap_or_else(|| "/".into()),
        };
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {}
            '(' => out.push(Tok::Open),
            ')' => out.push(Tok::Close),
            ',' => out.push(Tok::Comma),
            '!' => out.push(Tok::Not),
            '&' | '|' => {
                if chars.next() != Some(c) {
                    return Err(format!("`{c}` must be doubled (`{c}{c}`)"));
                }
                out.push(if c == '&' { Tok::And } else { Tok::Or });
            }
            '`' | '"' | '\'' => {
                let mut v = String::new();
                loop {
                    match chars.next() {
                        Some(x) if x == c => break,
                        Some(x) => v.push(x),
                        None => return Err("an unclosed quote".into()),
                    }
                }
                out.push(Tok::Str(v));
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut v = c.to_string();
                while let Some(&x) = chars.peek() {
                    if x.is_ascii_alphanumeric() || x == '_' {
                        v.push(x);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Tok::Ident(v));
            }
            other => return Err(format!("unexpected `{other}`")),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expr(&mut self) -> Result<Vec<Conj>, String> {
        let mut out = self.term()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            out.extend(self.term()?);
            if out.len() > MAX_ALTERNATIVES {
                return Err("the rule has too many alternatives".into());
            }
        }
        Ok(out)
    }

    fn term(&mut self) -> Result<Vec<Conj>, String> {
        let mut out = self.factor()?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            let right = self.factor()?;
            let mut next = Vec::new();
            for a in &out {
                for b in &right {
                    let mut c = a.clone();
                    c.hosts.extend(b.hosts.iter().cloned());
                    c.paths.extend(b.paths.iter().cloned());
                    next.push(c);
                }
            }
            if next.len() > MAX_ALTERNATIVES {
                return Err("the rule has too many alternatives".into());
            }
            out = next;
        }
        Ok(out)
    }

    fn factor(&mut self) -> Result<Vec<Conj>, String> {
        match self.next() {
            Some(Tok::Open) => {
                let e = self.expr()?;
                match self.next() {
                    Some(Tok::Close) => Ok(e),
                    _ => Err("a `(` is not closed".into()),
                }
            }
            Some(Tok::Not) => Err("`!` (negation) is not supported".into()),
            Some(Tok::Ident(name)) => self.matcher(&name),
            Some(t) => Err(format!("unexpected {t:?} in rule")),
            None => Err("the rule ends early".into()),
        }
    }

    fn matcher(&mut self, name: &str) -> Result<Vec<Conj>, String> {
        if self.next() != Some(Tok::Open) {
            return Err(format!("`{name}` must be followed by `(`"));
        }
        let mut args = Vec::new();
        loop {
            match self.next() {
                Some(Tok::Str(s)) => args.push(s),
                Some(Tok::Close) if args.is_empty() => break,
                _ => return Err(format!("`{name}(...)` takes quoted values")),
            }
            match self.next() {
                Some(Tok::Comma) => {}
                Some(Tok::Close) => break,
                _ => return Err(format!("`{name}(...)` is not closed")),
            }
        }
        if args.is_empty() {
            return Err(format!("`{name}()` needs a value"));
        }
        let one = |host: Option<String>, path: Option<String>| Conj {
            hosts: host.into_iter().collect(),
            paths: path.into_iter().collect(),
        };
        match name {
            "Host" => Ok(args
                .into_iter()
                .map(|h| one(Some(h.trim().to_ascii_lowercase()), None))
                .collect()),
            // A `Path` is routed as a prefix, like `PathPrefix`.
            "Path" | "PathPrefix" => args
                .into_iter()
                .map(|p| {
                    if p.starts_with('/') && !p.contains('{') {
                        Ok(one(None, Some(p)))
                    } else {
                        Err(format!("path `{p}` must start with `/` (no patterns)"))
                    }
                })
                .collect(),
            other => Err(format!("the matcher `{other}` is not supported")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(host: Option<&str>, path: &str) -> Match {
        Match {
            host: host.map(str::to_string),
            path: path.into(),
        }
    }

    #[test]
    fn hosts_paths_and_combinations() {
        assert_eq!(parse("Host(`a.local`)").unwrap(), [m(Some("a.local"), "/")]);
        assert_eq!(
            parse("Host(`A.local`) && PathPrefix(`/api`)").unwrap(),
            [m(Some("a.local"), "/api")]
        );
        assert_eq!(
            parse("(Host(`a`) || Host(`b`)) && (Path(`/x`) || PathPrefix(`/y`))").unwrap(),
            [
                m(Some("a"), "/x"),
                m(Some("a"), "/y"),
                m(Some("b"), "/x"),
                m(Some("b"), "/y")
            ]
        );
        assert_eq!(
            parse("Host(`a`, `b`)").unwrap(),
            [m(Some("a"), "/"), m(Some("b"), "/")]
        );
        assert_eq!(parse("PathPrefix(\"/p\")").unwrap(), [m(None, "/p")]);
    }

    #[test]
    fn what_cannot_be_routed_is_refused_with_a_reason() {
        for (rule, why) in [
            ("Host(`a`) && Host(`b`)", "two hosts"),
            ("Headers(`X`, `y`)", "not supported"),
            ("!Host(`a`)", "negation"),
            ("Host(`a`", "not closed"),
            ("Host(`a`) & Path(`/`)", "doubled"),
            ("Host:a.local", "unexpected"),
            ("PathPrefix(`/{id}`)", "no patterns"),
        ] {
            let e = parse(rule).unwrap_err();
            assert!(e.contains(why), "{rule}: {e}");
        }
    }
}
