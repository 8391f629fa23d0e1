//! `${VAR}` interpolation in string values.
//!
//! `${VAR}` is replaced by the variable's value (empty when unset, like a shell),
//! `${VAR:-default}` falls back to `default` when unset or empty, and `$${` writes a
//! literal `${`.

pub fn interpolate(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !input.contains('$') {
        return Ok(input.to_string());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(body) = after.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in `{input}`"))?;
            let expr = &body[..end];
            let (name, default) = match expr.find(":-") {
                Some(i) => (&expr[..i], Some(&expr[i + 2..])),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid variable name `{name}` in `{input}`"));
            }
            let value = lookup(name).filter(|v| !(v.is_empty() && default.is_some()));
            match (value, default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {}
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example.com".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn interpolates() {
        assert_eq!(
            interpolate("a.${HOST}:80", &env).unwrap(),
            "a.example.com:80"
        );
        assert_eq!(interpolate("${MISSING}", &env).unwrap(), "");
        assert_eq!(interpolate("${MISSING:-x}", &env).unwrap(), "x");
        assert_eq!(interpolate("${EMPTY:-y}", &env).unwrap(), "y");
        assert_eq!(interpolate("$${HOST}", &env).unwrap(), "${HOST}");
        assert_eq!(interpolate("cost $5", &env).unwrap(), "cost $5");
        assert!(interpolate("${HOST", &env).is_err());
        assert!(interpolate("${a-b}", &env).is_err());
    }
}
