//! Reading the token from a request and writing it into a response: the cookie (in Go
//! scs's exact attribute order) and/or a header.

use std::cell::RefCell;

use http::header::{CACHE_CONTROL, COOKIE, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderValue};
use scs_core::time::OffsetDateTime;
use scs_core::token::Token;

use crate::SameSite;
use crate::SessionManager;

/// Writes `t` (UTC) as an IMF-fixdate, the cookie `Expires` format:
/// `Thu, 01 Jan 1970 00:00:01 GMT`. By hand: this runs on every response with a cookie.
fn write_http_date(s: &mut String, t: OffsetDateTime) {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let two = |s: &mut String, n: u8| {
        s.push(char::from(b'0' + n / 10 % 10));
        s.push(char::from(b'0' + n % 10));
    };
    s.push_str(DAYS[usize::from(t.weekday().number_days_from_monday()) % 7]);
    s.push_str(", ");
    two(s, t.day());
    s.push(' ');
    s.push_str(MONTHS[(usize::from(u8::from(t.month())) + 11) % 12]);
    s.push(' ');
    // Cookie dates are years 1601 and later: four digits until 9999.
    let year = t.year().clamp(0, 9999).unsigned_abs();
    for div in [1000, 100, 10, 1] {
        s.push(char::from(b'0' + (year / div % 10) as u8));
    }
    s.push(' ');
    two(s, t.hour());
    s.push(':');
    two(s, t.minute());
    s.push(':');
    two(s, t.second());
    s.push_str(" GMT");
}

/// The token the client sent, when it has the exact shape of a token. Looks at the
/// session cookie (every `Cookie` header, first well-formed one wins) and then the token
/// header. Non-UTF-8 headers, malformed pairs and malformed tokens are skipped, so they
/// never reach the store.
pub(crate) fn read(manager: &SessionManager, headers: &HeaderMap) -> Option<Token> {
    let config = manager.config();
    if config.token_transport.uses_cookie() {
        let name = config.cookie.name.as_str();
        for value in headers.get_all(COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            // Browsers send every cookie of the site: only pairs that start with our name
            // go to the parser.
            for pair in value.split(';') {
                let Some(rest) = pair.trim_start().strip_prefix(name) else {
                    continue;
                };
                let Some(raw) = rest.trim_start().strip_prefix('=') else {
                    continue;
                };
                // The common case: the value is a bare token, which the cookie parser
                // would hand back unchanged (no quotes, nothing to trim but blanks).
                if let Some(token) = Token::parse(raw.trim()) {
                    return Some(token);
                }
                // Anything else goes through the cookie parser, which also takes the
                // value out of a pair of double quotes (RFC 6265 allows them; Go's
                // net/http, and so Go scs, accepts them).
                if let Ok(c) = cookie::Cookie::parse(pair)
                    && c.name() == name
                    && let Some(token) = Token::parse(c.value_trimmed())
                {
                    return Some(token);
                }
            }
        }
    }
    if let Some(header) = manager.token_header() {
        for value in headers.get_all(header) {
            if let Ok(value) = value.to_str()
                && let Some(token) = Token::parse(value.trim())
            {
                return Some(token);
            }
        }
    }
    None
}

/// Adds `Vary` for every way the token travels.
pub(crate) fn add_vary(manager: &SessionManager, headers: &mut HeaderMap) {
    if manager.config().token_transport.uses_cookie() {
        headers.append(VARY, HeaderValue::from_static("Cookie"));
    }
    if let crate::TokenTransport::Header(name) | crate::TokenTransport::Both(name) =
        &manager.config().token_transport
        && let Ok(value) = HeaderValue::from_str(name)
    {
        // As configured (header names are case-insensitive; people read it as written).
        headers.append(VARY, value);
    }
}

/// Writes the token (or, with `None`, its deletion) into the response headers.
pub(crate) fn write(
    manager: &SessionManager,
    headers: &mut HeaderMap,
    token: Option<&str>,
    expiry: OffsetDateTime,
    remember_me: bool,
) {
    let config = manager.config();
    if config.token_transport.uses_cookie() {
        let persist = config.cookie.persist || remember_me;
        // Only printable ASCII goes in (validated names and attributes, base64url token).
        if let Some(value) = set_cookie(manager, token, expiry, persist) {
            headers.append(SET_COOKIE, value);
            headers.append(
                CACHE_CONTROL,
                HeaderValue::from_static(r#"no-cache="Set-Cookie""#),
            );
        }
    }
    if let Some(header) = manager.token_header() {
        let value =
            HeaderValue::from_str(token.unwrap_or("")).unwrap_or(HeaderValue::from_static(""));
        headers.insert(header.clone(), value);
        if !config.token_transport.uses_cookie() {
            headers.append(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
}

/// The `Set-Cookie` value, attributes in the order Go's `net/http` writes them (Path,
/// Domain, Expires, Max-Age, HttpOnly, Secure, SameSite, Partitioned), so responses match
/// scs's byte for byte.
fn set_cookie(
    manager: &SessionManager,
    token: Option<&str>,
    expiry: OffsetDateTime,
    persist: bool,
) -> Option<HeaderValue> {
    thread_local! {
        // Written here, then copied once into the header value at its exact size.
        static BUF: RefCell<String> = const { RefCell::new(String::new()) };
    }
    let pooled = BUF.try_with(|buf| {
        let mut buf = buf.try_borrow_mut().ok()?;
        write_set_cookie(&mut buf, manager, token, expiry, persist);
        let value = HeaderValue::from_str(&buf).ok();
        // The token is not left behind in the buffer (as the token pool zeroes what it
        // hands out); the capacity is kept.
        let mut bytes = std::mem::take(&mut *buf).into_bytes();
        bytes.fill(0);
        bytes.clear();
        *buf = String::from_utf8(bytes).unwrap_or_default();
        Some(value)
    });
    match pooled {
        Ok(Some(value)) => value,
        // No thread-local storage (thread teardown): a buffer of its own.
        _ => {
            let mut buf = String::new();
            write_set_cookie(&mut buf, manager, token, expiry, persist);
            HeaderValue::try_from(buf).ok()
        }
    }
}

fn write_set_cookie(
    s: &mut String,
    manager: &SessionManager,
    token: Option<&str>,
    expiry: OffsetDateTime,
    persist: bool,
) {
    let c = &manager.config().cookie;
    s.push_str(&c.name);
    s.push('=');
    s.push_str(token.unwrap_or(""));
    s.push_str("; Path=");
    s.push_str(&c.path);
    if let Some(domain) = &c.domain {
        s.push_str("; Domain=");
        s.push_str(domain);
    }
    match token {
        None => s.push_str("; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0"),
        Some(_) if persist => {
            // Both rounded up to the second, as scs does. In 64-bit arithmetic: this runs
            // on every response with a cookie, and 128-bit division is a library call.
            let to_next_second = (1_000_000_000 - expiry.nanosecond()) % 1_000_000_000;
            if let Some(t) =
                expiry.checked_add(scs_core::time::Duration::nanoseconds(to_next_second.into()))
            {
                s.push_str("; Expires=");
                write_http_date(s, t);
            }
            let left = expiry.unix_timestamp_nanos() - scs_core::entry::now_nanos();
            let left = u64::try_from(left).unwrap_or(if left > 0 { u64::MAX } else { 0 });
            s.push_str("; Max-Age=");
            s.push_str(itoa::Buffer::new().format(left.div_ceil(1_000_000_000)));
        }
        Some(_) => {}
    }
    if c.http_only {
        s.push_str("; HttpOnly");
    }
    if c.secure {
        s.push_str("; Secure");
    }
    match c.same_site {
        SameSite::Lax => s.push_str("; SameSite=Lax"),
        SameSite::Strict => s.push_str("; SameSite=Strict"),
        SameSite::None => s.push_str("; SameSite=None"),
        SameSite::Omit => {}
    }
    if c.partitioned {
        s.push_str("; Partitioned");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scs_core::token;
    use scs_memstore::MemoryStore;

    fn manager() -> SessionManager {
        SessionManager::new(
            MemoryStore::builder()
                .cleanup_interval(None)
                .build()
                .unwrap(),
        )
    }

    #[test]
    fn deletion_cookie_matches_scs() {
        let m = manager();
        let mut h = HeaderMap::new();
        write(&m, &mut h, None, OffsetDateTime::UNIX_EPOCH, false);
        assert_eq!(
            h[SET_COOKIE],
            "session=; Path=/; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; HttpOnly; SameSite=Lax"
        );
        assert_eq!(h[CACHE_CONTROL], r#"no-cache="Set-Cookie""#);
    }

    #[test]
    fn cookies_written_in_turn_share_nothing() {
        // One buffer per thread serves every Set-Cookie: each value stands alone.
        let m = SessionManager::builder(
            MemoryStore::builder()
                .cleanup_interval(None)
                .build()
                .unwrap(),
        )
        .cookie_persist(false)
        .build()
        .unwrap();
        let (a, b) = (token::generate(), token::generate());
        let mut h = HeaderMap::new();
        write(&m, &mut h, Some(&a), OffsetDateTime::UNIX_EPOCH, false);
        write(&m, &mut h, None, OffsetDateTime::UNIX_EPOCH, false);
        write(&m, &mut h, Some(&b), OffsetDateTime::UNIX_EPOCH, false);
        let cookies: Vec<_> = h.get_all(SET_COOKIE).iter().collect();
        assert_eq!(
            cookies[0],
            format!("session={a}; Path=/; HttpOnly; SameSite=Lax").as_str()
        );
        assert_eq!(
            cookies[1],
            "session=; Path=/; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            cookies[2],
            format!("session={b}; Path=/; HttpOnly; SameSite=Lax").as_str()
        );
    }

    #[test]
    fn http_dates_match_the_standard_format() {
        use time::format_description::well_known::Rfc2822;
        for secs in [1, 86_400 * 59, 951_782_400, 1_795_000_000, 4_102_444_799] {
            let t = OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let mut mine = String::new();
            write_http_date(&mut mine, t);
            // RFC 2822 with "+0000" is the same date with another zone spelling.
            let want = t.format(&Rfc2822).unwrap().replace("+0000", "GMT");
            assert_eq!(mine, want, "{secs}");
        }
    }

    #[test]
    fn expires_and_max_age_round_up() {
        let m = manager();
        let mut h = HeaderMap::new();
        let t = token::generate();
        let expiry = OffsetDateTime::now_utc() + std::time::Duration::from_millis(86_399_500);
        write(&m, &mut h, Some(&t), expiry, false);
        let v = h[SET_COOKIE].to_str().unwrap();
        assert!(
            v.starts_with(&format!("session={t}; Path=/; Expires=")),
            "{v}"
        );
        assert!(
            v.ends_with("; Max-Age=86400; HttpOnly; SameSite=Lax"),
            "{v}"
        );
    }

    #[test]
    fn expires_is_the_next_whole_second_and_max_age_never_negative() {
        let m = manager();
        let t = token::generate();
        let at = |secs: i64, nanos: i64| {
            OffsetDateTime::from_unix_timestamp(secs).unwrap()
                + scs_core::time::Duration::nanoseconds(nanos)
        };
        // Already past: the date as it falls, rounded up, and Max-Age 0.
        for (expiry, want) in [
            (at(1_000_000_000, 0), "Sun, 09 Sep 2001 01:46:40 GMT"),
            (at(1_000_000_000, 1), "Sun, 09 Sep 2001 01:46:41 GMT"),
            (
                at(1_000_000_000, 999_999_999),
                "Sun, 09 Sep 2001 01:46:41 GMT",
            ),
            (at(1_000_000_059, 500), "Sun, 09 Sep 2001 01:47:40 GMT"),
            (at(86_399, 1), "Fri, 02 Jan 1970 00:00:00 GMT"),
        ] {
            let mut h = HeaderMap::new();
            write(&m, &mut h, Some(&t), expiry, false);
            let v = h[SET_COOKIE].to_str().unwrap();
            assert!(
                v.contains(&format!("; Expires={want}; Max-Age=0;")),
                "{expiry}: {v}"
            );
        }
    }

    #[test]
    fn reads_first_valid_cookie_and_skips_garbage() {
        let m = manager();
        let good = token::generate();
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_bytes(b"session=\xff\xfe").unwrap(),
        );
        h.append(
            COOKIE,
            HeaderValue::from_str(&format!("a=b; session=not-a-token; ;=; session={good}"))
                .unwrap(),
        );
        assert_eq!(
            read(&m, &h).as_ref().map(Token::as_str),
            Some(good.as_str())
        );
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("session=x"));
        assert!(read(&m, &h).is_none());
    }

    #[test]
    fn reads_blank_padded_and_quoted_tokens_only_under_our_name() {
        let m = manager();
        let good = token::generate();
        let read_from = |cookie: String| {
            let mut h = HeaderMap::new();
            h.append(COOKIE, HeaderValue::from_str(&cookie).unwrap());
            read(&m, &h).map(|t| t.as_str().to_owned())
        };
        assert_eq!(read_from(format!("session = {good} ")), Some(good.clone()));
        assert_eq!(
            read_from(format!("a=1;session=\"{good}\"")),
            Some(good.clone())
        );
        // A lone quote is not a pair: kept, so not a token.
        assert_eq!(read_from(format!("session=\"{good}")), None);
        // Another cookie whose name starts with ours.
        assert_eq!(read_from(format!("sessionx={good}")), None);
        assert_eq!(read_from(format!("x_session={good}")), None);
    }
}
