//! Which configuration values are secrets, and how a value is shown where it may hold one.
//!
//! One rule for every place a configured value can surface: configuration errors (at start,
//! on reload, in `config.lastError`, events and logs, through [`Problem`](crate::Problem)'s
//! `Display`), `check-config` listings, strategy descriptions and records.
//!
//! | value | shown as |
//! |---|---|
//! | `api.token`, `api.read_token` | `"***"` |
//! | a webhook's `headers` (`strategies.webhook.NAME.headers...`) | `"***"` |
//! | a command's `env` (`strategies.command.NAME.env...`) | `"***"` |
//! | a command's `args` in an error (whether an argument is marked `secret` is not known before it is read) | `"***"` |
//! | a command argument marked `secret = true`, in descriptions, records and logs | `***` |
//! | a URL anywhere | without `user:password@` and with every query value replaced by `***` |
//! | the value of an unknown key (a misspelt `tokne`) | not shown |
//!
//! ```
//! use perfpilot_strategies::secret;
//!
//! assert!(secret::is_secret_key("api.token"));
//! assert!(secret::is_secret_key("strategies.webhook.trim.headers.Authorization"));
//! assert!(!secret::is_secret_key("strategies.webhook.trim.url"));
//! assert_eq!(
//!     secret::redact_url("http://admin:pw@127.0.0.1:8080/trim?apikey=k3y"),
//!     "http://127.0.0.1:8080/trim?apikey=***"
//! );
//! ```

/// What a hidden value is shown as (a TOML string, so listings stay TOML).
pub const HIDDEN: &str = "\"***\"";

/// Whether the value at the dotted configuration `key` (or anything under it) is a secret
/// that no error, log line, record or listing may show.
pub fn is_secret_key(key: &str) -> bool {
    let segments = split_dotted(key);
    let field_is = |kind: &str, secret: &dyn Fn(&str) -> bool| {
        segments.len() > 3
            && segments[0] == "strategies"
            && segments[1] == kind
            // Past the instance's name (listings join a dotted name unquoted, so any later
            // segment may be the field).
            && segments[3..].iter().any(|s| secret(s))
    };
    matches!(segments.as_slice(), [api, field, ..] if api == "api" && (field == "token" || field == "read_token"))
        || field_is("webhook", &|s| s == "headers")
        || field_is("command", &|s| {
            s == "env" || s == "args" || s.starts_with("args[")
        })
}

/// What an error or listing shows for `value` written at `key`: [`HIDDEN`] for a secret
/// key, else the value with every URL in it redacted ([`redact_urls_in`]).
pub fn shown_value(key: &str, value: &str) -> String {
    if is_secret_key(key) {
        HIDDEN.to_owned()
    } else {
        redact_urls_in(value)
    }
}

/// `url` without its user name and password (`http://user:pw@host/x` is shown as
/// `http://host/x`) and with every query value replaced by `***` (`?apikey=***`); text that
/// is not a URL is returned as it is.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    if parsed.cannot_be_a_base() {
        return url.to_owned();
    }
    let mut changed = false;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        changed = true;
    }
    if let Some(query) = parsed.query().filter(|q| !q.is_empty()) {
        let hidden: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}=***"),
                // A bare `?k3y` may be the secret itself.
                None if pair.is_empty() => String::new(),
                None => "***".to_owned(),
            })
            .collect();
        parsed.set_query(Some(&hidden.join("&")));
        changed = true;
    }
    if changed {
        parsed.to_string()
    } else {
        url.to_owned()
    }
}

/// `text` with every `scheme://...` URL in it passed through [`redact_url`] (a URL ends at
/// whitespace or a quote).
pub fn redact_urls_in(text: &str) -> String {
    if !text.contains("://") {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The scheme: the letters, digits, `+`, `-`, `.` right before `://`.
        let scheme_start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..scheme_start]);
        out.push_str(&redact_url(&rest[scheme_start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The segments of a dotted key as TOML writes it (`strategies.webhook."a.b".headers` has
/// four: quoted segments keep their dots).
fn split_dotted(key: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            '.' if !quoted => segments.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    segments.push(current);
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_known_by_their_place() {
        for key in [
            "api.token",
            "api.read_token",
            "strategies.webhook.trim.headers",
            "strategies.webhook.\"a.b\".headers.X-Key",
            "strategies.command.rotate.env.API_KEY",
            "strategies.command.rotate.env",
            "strategies.command.rotate.args[2]",
            "strategies.command.rotate.args",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "api.listen",
            "api.tokens",
            "strategies.webhook.trim.url",
            "strategies.webhook.headers",
            "strategies.command.rotate.program",
            "interval",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn urls_lose_credentials_and_query_values() {
        assert_eq!(
            redact_url("http://admin:s3cret@127.0.0.1:8080/admin/trim?x=1"),
            "http://127.0.0.1:8080/admin/trim?x=***"
        );
        assert_eq!(redact_url("http://token@host/x"), "http://host/x");
        assert_eq!(redact_url("http://host/x"), "http://host/x");
        assert_eq!(redact_url("http://host/x?k3y"), "http://host/x?***");
        assert_eq!(
            redact_url("http://host/x?a=1&b=&c"),
            "http://host/x?a=***&b=***&***"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn urls_inside_text_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_urls_in("\"http://u:p@h/x?apikey=1\" and https://h2/?t=2 end"),
            "\"http://h/x?apikey=***\" and https://h2/?t=*** end"
        );
        assert_eq!(redact_urls_in("plain 1.5"), "plain 1.5");
        assert_eq!(shown_value("api.token", "\"w\""), HIDDEN);
    }
}
