//! Text from outside (a build's log, a server's answer) made safe to show
//! on a terminal.

/// `text` with every control character but newline and tab written out
/// (`\x1b`, `\r`, `\u{9b}`): a build's log may hold escape sequences that
/// set a terminal's clipboard (OSC 52), clear it or retitle it.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_leave_nothing_a_terminal_acts_on() {
        let osc52 = "ok\n\x1b]52;c;ZXZpbA==\x07\x1b[2J\r\u{9b}31m\tend";
        let shown = super::escape_controls(osc52);
        assert_eq!(
            shown,
            "ok\n\\x{1b}]52;c;ZXZpbA==\\x{7}\\x{1b}[2J\\r\\x{9b}31m\tend"
        );
        assert!(
            !shown
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
        );
    }
}
