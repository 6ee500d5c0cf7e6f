//! The canonical form resource URIs are matched in (SPEC §2 step 7).
//!
//! MCP servers decode what they read, so `file:///data/%2E%2E/secret` and `file:///secret` name
//! the same file for the server and must for the policy too. The canonical form is the whole URI
//! percent-decoded once (a `%` not followed by two hex digits stays as it is), then the `.` and
//! `..` segments removed from the path of the decoded text (RFC 3986 Appendix B split, §5.2.4);
//! scheme, authority, query and fragment stay as they are. The policy's `uri` / `uriPrefix` and
//! the called URI take the same form, so a prefix check on canonical forms cannot be side-stepped
//! by encoding or dot segments.

use std::borrow::Cow;

/// The canonical form of `uri`, or `None` when the decoded text is not UTF-8 or holds a NUL or a
/// backslash (servers disagree on what those mean, so such a URI is ambiguous).
pub fn canonical(uri: &str) -> Option<Cow<'_, str>> {
    let decoded: Cow<'_, str> = match percent_encoding::percent_decode_str(uri).decode_utf8() {
        Ok(text) => text,
        Err(_) => return None,
    };
    if decoded.contains(['\0', '\\']) {
        return None;
    }
    let (before, path, after) = split_path(&decoded);
    if !path.contains('.') {
        return Some(decoded);
    }
    let path = remove_dot_segments(path);
    Some(Cow::Owned(format!("{before}{path}{after}")))
}

/// RFC 3986 Appendix B: `scheme:` and `//authority` before the path, `?query#fragment` after.
fn split_path(uri: &str) -> (&str, &str, &str) {
    let mut start = 0;
    if let Some(colon) = uri.find(':')
        && colon > 0
        && !uri[..colon].contains(['/', '?', '#'])
    {
        start = colon + 1;
    }
    if uri[start..].starts_with("//") {
        start += 2 + uri[start + 2..]
            .find(['/', '?', '#'])
            .unwrap_or(uri.len() - start - 2);
    }
    let end = uri[start..]
        .find(['?', '#'])
        .map_or(uri.len(), |i| start + i);
    (&uri[..start], &uri[start..end], &uri[end..])
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(mut input: &str) -> String {
    let mut output = String::with_capacity(input.len());
    while !input.is_empty() {
        if let Some(rest) = input
            .strip_prefix("../")
            .or_else(|| input.strip_prefix("./"))
        {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") || input == "/.." {
            input = if input == "/.." { "/" } else { &input[3..] };
            output.truncate(output.rfind('/').unwrap_or(0));
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let from = usize::from(input.starts_with('/'));
            let end = input[from..].find('/').map_or(input.len(), |i| from + i);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for (uri, want) in [
            ("file:///data/report.txt", "file:///data/report.txt"),
            ("file:///data/%2E%2E/secret", "file:///secret"),
            ("file:///data/../secret", "file:///secret"),
            ("file:///data/./a/./b", "file:///data/a/b"),
            ("file:///data/a/..", "file:///data/"),
            ("file:///data/%2e%2e%2fsecret", "file:///secret"),
            (
                "https://host/a/b/../c?x=/../y#/./z",
                "https://host/a/c?x=/../y#/./z",
            ),
            ("https://ho.st/../x", "https://ho.st/x"),
            ("docs://../../etc", "docs://../etc"),
            ("a/../b", "/b"),
            ("../../x", "x"),
            ("/..", "/"),
            ("100%", "100%"),
            ("%zz/%4", "%zz/%4"),
            ("caf%C3%A9", "café"),
            ("mem:a.b", "mem:a.b"),
            ("", ""),
        ] {
            assert_eq!(canonical(uri).as_deref(), Some(want), "{uri}");
        }
    }

    #[test]
    fn ambiguous_uris_have_no_canonical_form() {
        for uri in [
            "file:///a%00b",
            "file:///a%5Cb",
            "file:///a\\b",
            "file:///%FF",
            "x%C3",
        ] {
            assert_eq!(canonical(uri), None, "{uri}");
        }
    }

    #[test]
    fn rfc_3986_examples() {
        // §5.2.4's own examples.
        assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
        assert_eq!(remove_dot_segments("mid/content=5/../6"), "mid/6");
    }
}
