//! The pages' form bodies (`application/x-www-form-urlencoded`) decoded straight into
//! zeroizing buffers, so no password lingers in a freed allocation of qam-web's own.

use qam_client::Password;
use zeroize::Zeroizing;

/// Largest form body accepted; the longest legitimate one (three passwords of qamd's maximum
/// length, a username and a token) fits well below it.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// One decoded form: its fields in order, every value in a zeroizing buffer.
pub struct Form {
    /// `(name, value)` pairs as sent.
    fields: Vec<(String, Zeroizing<String>)>,
}

/// A body that is not a well-formed form.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the form could not be read")]
pub struct BadForm;

impl Form {
    /// Decodes `body`; `+` is a space and `%XX` a byte, and the result must be UTF-8.
    pub fn decode(body: &[u8]) -> Result<Form, BadForm> {
        let mut fields = Vec::new();
        for pair in body
            .split(|&byte| byte == b'&')
            .filter(|pair| !pair.is_empty())
        {
            let (name, value) = match pair.iter().position(|&byte| byte == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &[][..]),
            };
            let name = decode_component(name)?;
            fields.push((name.as_str().to_owned(), decode_component(value)?));
        }
        Ok(Form { fields })
    }

    /// The first value of field `name`, or "" when absent.
    pub fn text(&self, name: &str) -> String {
        self.value(name)
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default()
    }

    /// The first value of field `name` as a password (empty when absent).
    pub fn password(&self, name: &str) -> Password {
        Password::new(
            self.value(name)
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default(),
        )
    }

    fn value(&self, name: &str) -> Option<&Zeroizing<String>> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value)
    }
}

/// Percent-decodes one name or value into a zeroizing buffer.
fn decode_component(raw: &[u8]) -> Result<Zeroizing<String>, BadForm> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(raw.len()));
    let mut at = 0;
    while at < raw.len() {
        match raw[at] {
            b'+' => bytes.push(b' '),
            b'%' => {
                let high = raw.get(at + 1).and_then(|&c| hex_digit(c)).ok_or(BadForm)?;
                let low = raw.get(at + 2).and_then(|&c| hex_digit(c)).ok_or(BadForm)?;
                bytes.push(high << 4 | low);
                at += 2;
            }
            byte => bytes.push(byte),
        }
        at += 1;
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| BadForm)?;
    Ok(Zeroizing::new(text.to_owned()))
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|digit| digit as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_percent_and_utf8() {
        let form = Form::decode(b"user=al+ice&password=p%C3%A4ss%26%3D&empty=&flag").unwrap();
        assert_eq!(form.text("user"), "al ice");
        assert_eq!(form.password("password").expose(), "päss&=");
        assert_eq!(form.text("empty"), "");
        assert_eq!(form.text("flag"), "");
        assert_eq!(form.text("missing"), "");
    }

    #[test]
    fn refuses_broken_escapes_and_bad_utf8() {
        assert_eq!(Form::decode(b"a=%4").err(), Some(BadForm));
        assert_eq!(Form::decode(b"a=%zz").err(), Some(BadForm));
        assert_eq!(Form::decode(b"a=%FF").err(), Some(BadForm));
    }
}
