//! The README's deployment snippets, read by the tests that perform them: what a sysadmin is
//! told is exactly what the tests run, with only the test's own paths put in.

use std::fs;

/// The README's text.
pub fn text() -> String {
    fs::read_to_string(crate::workspace_root().join("README.md")).expect("README.md")
}

/// The first fenced code block (```) after the first occurrence of `marker`.
pub fn block_after(marker: &str) -> String {
    let text = text();
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("README has no `{marker}`"));
    let rest = &text[start..];
    let open = rest
        .find("```")
        .unwrap_or_else(|| panic!("no code block after `{marker}`"));
    let body = &rest[open..];
    let body = &body[body.find('\n').map_or(body.len(), |i| i + 1)..];
    let close = body.find("```").expect("closing ```");
    body[..close].to_owned()
}

/// The top-level `name { … }` section of a Dovecot-style block starting with `head`
/// (e.g. `userdb {`), through its closing brace at the start of a line.
pub fn section(block: &str, head: &str) -> String {
    let start = block
        .find(head)
        .unwrap_or_else(|| panic!("no `{head}` in:\n{block}"));
    let rest = &block[start..];
    let end = rest.find("\n}").map_or(rest.len(), |i| i + 2);
    format!("{}\n", &rest[..end])
}

/// `block` without its section starting with `head`.
pub fn without_section(block: &str, head: &str) -> String {
    block.replace(&section(block, head), "")
}
