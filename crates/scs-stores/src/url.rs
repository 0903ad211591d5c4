//! Store URLs fit for logs and error messages.

/// The URL with its password (and any query parameter that looks like a secret) replaced
/// by `***`, for logs and error messages. Anything else is kept as it is.
///
/// ```
/// use scs_stores::redact;
///
/// assert_eq!(redact("postgres://app:s3cret@db:5432/app"), "postgres://app:***@db:5432/app");
/// assert_eq!(redact("redis://:s3cret@cache:6379/0"), "redis://:***@cache:6379/0");
/// assert_eq!(redact("mysql://db/app?password=s3cret&ssl-mode=required"),
///            "mysql://db/app?password=***&ssl-mode=required");
/// assert_eq!(redact("sqlite://sessions.db"), "sqlite://sessions.db");
/// ```
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once(':') else {
        return url.to_owned();
    };
    let (slashes, rest) = match rest.strip_prefix("//") {
        Some(r) => ("//", r),
        None => ("", rest),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{hosts}"),
            None => format!("{userinfo}@{hosts}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if is_secret(k) => format!("{k}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            let mut out = format!("{path}?{}", query.join("&"));
            if let Some(f) = fragment {
                out.push('#');
                out.push_str(f);
            }
            out
        }
        None => tail.to_owned(),
    };
    format!("{scheme}:{slashes}{authority}{tail}")
}

fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "secret", "token", "key", "credential"]
        .iter()
        .any(|s| key.contains(s))
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn hides_passwords() {
        for (url, want) in [
            ("memory://", "memory://"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("postgres://u:p@h/db", "postgres://u:***@h/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgres:u:p@h", "postgres:u:***@h"),
            (
                "mongodb://u:p:q@a,b/db?authSource=admin",
                "mongodb://u:***@a,b/db?authSource=admin",
            ),
            ("nats://u:p@h:4222", "nats://u:***@h:4222"),
            ("etcd://u:p@a:1,b:2", "etcd://u:***@a:1,b:2"),
            ("redis://h/0?password=p#x", "redis://h/0?password=***#x"),
            ("mysql://h/db?sslkey=/k.pem", "mysql://h/db?sslkey=***"),
            ("no scheme", "no scheme"),
        ] {
            assert_eq!(redact(url), want, "{url}");
        }
    }
}
