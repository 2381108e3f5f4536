//! ejabberd's accounts as `ejabberdctl export_piefxis` writes them (XEP-0227): `<user>` elements
//! with a `password` attribute (plain format) or `<scram-credentials>` (SCRAM-SHA-1/256/512).

use super::{read_file, scram_verifier, Credential, Moved, Reading, SourceError};
use base64ct::{Base64, Encoding};
use qam_client::Password;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use std::path::Path;

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
                    let keys = (
                        decode("salt")?,
                        decode("stored-key")?,
                        decode("server-key")?,
                    );
                    Ok::<_, String>(undo_double_base64(&mechanism, keys))
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

/// Reads an export and the per-host files its `<xi:include href=…>` elements name (ejabberd
/// writes an index file plus one file per host, all in one directory).
pub fn read_export(path: &Path) -> Result<Reading, SourceError> {
    let (mut reading, includes) = read(&read_file(path)?);
    let dir = path.parent().unwrap_or(Path::new("."));
    for href in includes {
        if href.contains('/') || href.starts_with('.') {
            reading.refuse(href, "an include outside the export's directory");
            continue;
        }
        let (included, nested) = read(&read_file(&dir.join(&href))?);
        reading.accounts.extend(included.accounts);
        reading.unreadable.extend(included.unreadable);
        for href in nested {
            reading.refuse(href, "includes nested more than one level");
        }
    }
    Ok(reading)
}

/// Reads every `<user>` of every `<host>` in a XEP-0227 document; also answers the `href`s of
/// its `<xi:include>` elements.
pub fn read(xml: &[u8]) -> (Reading, Vec<String>) {
    let mut reading = Reading::default();
    let mut includes = Vec::new();
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
                return (reading, includes);
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
            Event::Empty(element)
                if user.is_none() && element.local_name().as_ref() == b"include" =>
            {
                includes.extend(attribute(&element, b"href"));
            }
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
    (reading, includes)
}

/// ejabberd 23.01 exports the base64 text it stores, base64-encoded once more. When the keys,
/// decoded once, are not the mechanism's length but decode again to it, every field is
/// decoded a second time.
fn undo_double_base64(
    mechanism: &str,
    (salt, stored, server): (Vec<u8>, Vec<u8>, Vec<u8>),
) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let key_len = match mechanism {
        "SCRAM-SHA-1" => 20,
        "SCRAM-SHA-256" => 32,
        _ => 64,
    };
    let again = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| Base64::decode_vec(text).ok())
    };
    if stored.len() != key_len {
        if let (Some(salt2), Some(stored2), Some(server2)) =
            (again(&salt), again(&stored), again(&server))
        {
            if stored2.len() == key_len && server2.len() == key_len {
                return (salt2, stored2, server2);
            }
        }
    }
    (salt, stored, server)
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
        let (reading, _) = read(EXPORT.as_bytes());
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
    fn ejabberd_2301_double_base64_is_undone_and_includes_are_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("index.xml"),
            "<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'>\
             <xi:include href='host.xml'/><xi:include href='../etc/passwd'/></server-data>",
        )
        .expect("write index");
        // Made by ejabberd 23.01: `register bob example.org 's3cret pw'`, auth_scram_hash sha256.
        std::fs::write(
            dir.path().join("host.xml"),
            "<host xmlns='urn:xmpp:pie:0' jid='example.org'><user name='bob'>\
             <scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-256'>\
             <iter-count>4096</iter-count><salt>SG1KeGcvbi9CaGRaT2lXT3RySHlYQT09</salt>\
             <server-key>MkxFZURBYnlMS05naEp2Y2ZCU0FwcHBwZngzOCt0NXl5dS95cTRsS3Y4az0=</server-key>\
             <stored-key>dEhVd0tJQTN2NktiU1pxRDdvUFRWNFRmQzFQSWtCcTlMbUhQdVovck94TT0=</stored-key>\
             </scram-credentials></user></host>",
        )
        .expect("write host");
        let reading = read_export(&dir.path().join("index.xml")).expect("reads");
        assert_eq!(reading.accounts.len(), 1);
        let Credential::Verifier(verifier) = &reading.accounts[0].credential else {
            panic!("bob is SCRAM");
        };
        assert_eq!(
            verifier,
            "{SCRAM-SHA-256}4096,HmJxg/n/BhdZOiWOtrHyXA==,tHUwKIA3v6KbSZqD7oPTV4TfC1PIkBq9LmHPuZ/rOxM=,2LEeDAbyLKNghJvcfBSAppppfx38+t5yyu/yq4lKv8k="
        );
        assert_eq!(reading.unreadable[0].place, "../etc/passwd");
    }

    #[test]
    fn broken_xml_is_reported_not_guessed() {
        let (reading, _) = read(b"<server-data><host jid='x'><user name='a' password='b'>");
        assert!(reading.accounts.is_empty());
        let (reading, _) = read(b"<server-data><host jid='x'><user name='a' password='b'></host>");
        assert!(!reading.unreadable.is_empty());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes at all: accounts and refusals, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read(&bytes);
        }

        /// A user with any attribute text round-trips through XML escaping.
        #[test]
        fn plain_passwords_survive_xml_escaping(name in "[a-z]{1,10}", password in "[ -~]{1,30}") {
            let escaped = quick_xml::escape::escape(password.as_str());
            let xml = format!("<server-data><host jid='h'><user name='{name}' password='{escaped}'/></host></server-data>");
            let (reading, _) = read(xml.as_bytes());
            prop_assert_eq!(reading.accounts.len(), 1);
            let Credential::Plain(read_back) = &reading.accounts[0].credential else {
                return Err(TestCaseError::fail("a plain user"));
            };
            prop_assert_eq!(read_back.expose(), password.as_str());
        }
    }
}
