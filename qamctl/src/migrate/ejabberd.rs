//! ejabberd's accounts as `ejabberdctl export_piefxis` writes them (XEP-0227): `<user>` elements
//! with a `password` attribute (plain format) or `<scram-credentials>` (SCRAM-SHA-1/256/512).

use super::{scram_verifier, Credential, Moved, Reading};
use base64ct::{Base64, Encoding};
use qam_client::Password;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// Where the reader is inside one `<user>`: the SCRAM child being read and the text so far.
#[derive(Default)]
struct UserInProgress {
    /// `host/name` of the user, for the admin's error list.
    place: String,
    /// The user's local part as exported.
    name: String,
    /// The `password` attribute (plain format), if present.
    plain: Option<Password>,
    /// The `mechanism` of `<scram-credentials>`, once seen.
    mechanism: Option<String>,
    /// `iter-count`, `salt`, `server-key`, `stored-key` texts, by element name.
    scram_fields: Vec<(String, String)>,
    /// The SCRAM child element whose text is being read.
    current_field: Option<String>,
    /// How many elements deep inside this `<user>` the reader is.
    depth: usize,
}

fn attribute(element: &BytesStart, name: &[u8]) -> Option<String> {
    element
        .attributes()
        .flatten()
        .find(|attr| attr.key.local_name().as_ref() == name)
        .and_then(|attr| attr.unescape_value().ok().map(|v| v.into_owned()))
}

impl UserInProgress {
    fn finish(self) -> Result<Moved, (String, String)> {
        let place = self.place;
        let credential = match (self.mechanism, self.plain) {
            (Some(mechanism), _) => {
                let field = |name: &str| {
                    self.scram_fields
                        .iter()
                        .find(|(key, _)| key == name)
                        .map(|(_, text)| text.trim().to_owned())
                };
                let decode = |name: &str| -> Result<Vec<u8>, String> {
                    let text = field(name).ok_or(format!("scram-credentials without {name}"))?;
                    Base64::decode_vec(&text).map_err(|_| format!("{name} is not base64"))
                };
                let iterations = field("iter-count")
                    .and_then(|text| text.parse::<u64>().ok())
                    .ok_or((place.clone(), "iter-count is not a number".to_owned()));
                let keys = (|| {
                    Ok((
                        decode("salt")?,
                        decode("stored-key")?,
                        decode("server-key")?,
                    ))
                })();
                match (iterations, keys) {
                    (Ok(iterations), Ok((salt, stored, server))) => {
                        if !matches!(
                            mechanism.as_str(),
                            "SCRAM-SHA-1" | "SCRAM-SHA-256" | "SCRAM-SHA-512"
                        ) {
                            return Err((place, format!("unknown mechanism {mechanism}")));
                        }
                        Credential::Verifier(scram_verifier(
                            &mechanism, iterations, &salt, &stored, &server,
                        ))
                    }
                    (Err(err), _) => return Err(err),
                    (_, Err(reason)) => return Err((place, reason)),
                }
            }
            (None, Some(plain)) => Credential::Plain(plain),
            (None, None) => return Err((place, "no password and no SCRAM credentials".into())),
        };
        Ok(Moved {
            place,
            name: self.name,
            credential,
            locked: false,
        })
    }
}

/// Reads every `<user>` of every `<host>` in a XEP-0227 document.
pub fn read(xml: &[u8]) -> Reading {
    let mut reading = Reading::default();
    let mut reader = Reader::from_reader(xml);
    let mut host = String::new();
    let mut user: Option<UserInProgress> = None;
    let mut buffer = Vec::new();
    loop {
        let event = match reader.read_event_into(&mut buffer) {
            Ok(event) => event,
            Err(err) => {
                let place = format!("byte {}", reader.buffer_position());
                reading.refuse(place, format!("not well-formed XML: {err}"));
                return reading;
            }
        };
        match event {
            Event::Start(element) => match (&mut user, element.local_name().as_ref()) {
                (None, b"host") => host = attribute(&element, b"jid").unwrap_or_default(),
                (None, b"user") => {
                    let name = attribute(&element, b"name").unwrap_or_default();
                    user = Some(UserInProgress {
                        place: format!("{host}/{name}"),
                        plain: attribute(&element, b"password").map(Password::from),
                        name,
                        ..UserInProgress::default()
                    });
                }
                (Some(current), local) => {
                    current.depth += 1;
                    if local == b"scram-credentials" && current.depth == 1 {
                        current.mechanism = attribute(&element, b"mechanism");
                    } else if current.depth == 2 && current.mechanism.is_some() {
                        current.current_field = Some(String::from_utf8_lossy(local).into_owned());
                    }
                }
                _ => {}
            },
            Event::Empty(element) if user.is_none() && element.local_name().as_ref() == b"user" => {
                let name = attribute(&element, b"name").unwrap_or_default();
                let done = UserInProgress {
                    place: format!("{host}/{name}"),
                    plain: attribute(&element, b"password").map(Password::from),
                    name,
                    ..UserInProgress::default()
                };
                collect(&mut reading, done.finish());
            }
            Event::Text(text) => {
                if let Some(current) = &mut user {
                    if let Some(field) = current.current_field.clone() {
                        let text = text.decode().map(|t| t.into_owned()).unwrap_or_default();
                        current.scram_fields.push((field, text));
                    }
                }
            }
            Event::End(_) => match &mut user {
                Some(current) if current.depth > 0 => {
                    current.depth -= 1;
                    current.current_field = None;
                }
                Some(_) => {
                    if let Some(done) = user.take() {
                        collect(&mut reading, done.finish());
                    }
                }
                None => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buffer.clear();
    }
    reading
}

fn collect(reading: &mut Reading, outcome: Result<Moved, (String, String)>) {
    match outcome {
        Ok(moved) => reading.accounts.push(moved),
        Err((place, reason)) => reading.refuse(place, reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPORT: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<server-data xmlns='urn:xmpp:pie:0'>
<host jid='example.org'>
<user name='alice' password='wonder&amp;land'/>
<user name='bob'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'><iter-count>4096</iter-count><salt>QSXCR+Q6sek8bf92</salt><server-key>D+CSWLOshSulAsxiupA+qs2/fTE=</server-key><stored-key>6dlGYMOdZcOPutkcNY8U2g7vK9Y=</stored-key></scram-credentials><query xmlns='jabber:iq:roster'><item jid='alice@example.org'/></query></user>
<user name='carol'/>
</host>
</server-data>"#;

    #[test]
    fn reads_plain_and_scram_users() {
        let reading = read(EXPORT.as_bytes());
        assert_eq!(reading.accounts.len(), 2, "{:?}", reading.unreadable);
        assert_eq!(reading.accounts[0].name, "alice");
        let Credential::Plain(password) = &reading.accounts[0].credential else {
            panic!("alice is plain");
        };
        assert_eq!(password.expose(), "wonder&land");
        let Credential::Verifier(verifier) = &reading.accounts[1].credential else {
            panic!("bob is SCRAM");
        };
        assert_eq!(
            verifier,
            "{SCRAM-SHA-1}4096,QSXCR+Q6sek8bf92,6dlGYMOdZcOPutkcNY8U2g7vK9Y=,D+CSWLOshSulAsxiupA+qs2/fTE="
        );
        assert_eq!(reading.unreadable.len(), 1);
        assert_eq!(reading.unreadable[0].place, "example.org/carol");
    }

    #[test]
    fn broken_xml_is_reported_not_guessed() {
        let reading = read(b"<server-data><host jid='x'><user name='a' password='b'>");
        assert!(reading.accounts.is_empty());
        let reading = read(b"<server-data><host jid='x'><user name='a' password='b'></host>");
        assert!(!reading.unreadable.is_empty());
    }
}
