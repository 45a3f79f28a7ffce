//! What the relay's and the bootstrap server's HTML status pages share: escaping, password redaction
//! and the response headers.

use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Replaces the password of every `scheme://user:password@` in `text` by `***`.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote; its userinfo at its last '@'.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.split_once(':') {
                    Some((user, _password)) => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Escaped, with any URL password redacted: for every value that comes from outside.
pub fn show(text: &str) -> String {
    escape(&redact_urls(text))
}

/// An HTML page response: UTF-8, never cached.
pub fn page_response(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_redacts() {
        assert_eq!(
            escape("<b a=\"x\">&'</b>"),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;&lt;/b&gt;"
        );
        assert_eq!(
            redact_urls("cannot connect to mysql://repl:s3cret@db:3306/shop: refused"),
            "cannot connect to mysql://repl:***@db:3306/shop: refused"
        );
        assert_eq!(
            redact_urls("http://host:1/x and mysql://u@h/ and a://p:q@r"),
            "http://host:1/x and mysql://u@h/ and a://p:***@r"
        );
        assert_eq!(redact_urls("no url"), "no url");
        assert_eq!(show("<mysql://u:p@h>"), "&lt;mysql://u:***@h&gt;");
    }
}
