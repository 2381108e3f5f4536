//! The Varlink subset `io.systemd.UserDatabase` uses: a call (`method`, `parameters`, `more`,
//! `oneway`) decoded into a typed query, and replies and errors encoded with their NUL.

use serde_json::{json, Map, Value};

/// Longest call accepted (a userdb call is under 200 bytes); longer closes the connection.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// The interface served.
pub const INTERFACE: &str = "io.systemd.UserDatabase";

/// The lookups the interface defines, plus Varlink's `GetInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GetUserRecord`: by uid, by name, both, or neither (enumerate).
    User {
        /// `uid`.
        uid: Option<u32>,
        /// `userName`.
        name: Option<String>,
    },
    /// `GetGroupRecord`: by gid, by name, both, or neither (enumerate).
    Group {
        /// `gid`.
        gid: Option<u32>,
        /// `groupName`.
        name: Option<String>,
    },
    /// `GetMemberships`: of a user, of a group, one pair, or all.
    Memberships {
        /// `userName`.
        user: Option<String>,
        /// `groupName`.
        group: Option<String>,
    },
    /// `org.varlink.service.GetInfo`: who serves this socket.
    Info,
}

/// One decoded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// What is looked up.
    pub method: Method,
    /// The client accepts several replies (`continues` on all but the last).
    pub more: bool,
    /// The client wants no reply at all.
    pub oneway: bool,
}

/// Every error this door answers, by its Varlink name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarlinkError {
    #[error("io.systemd.UserDatabase.NoRecordFound")]
    NoRecordFound,
    #[error("io.systemd.UserDatabase.BadService")]
    BadService,
    #[error("io.systemd.UserDatabase.ServiceNotAvailable")]
    ServiceNotAvailable,
    #[error("io.systemd.UserDatabase.ConflictingRecordFound")]
    ConflictingRecordFound,
    #[error("org.varlink.service.MethodNotFound")]
    MethodNotFound(String),
    #[error("org.varlink.service.InvalidParameter")]
    InvalidParameter(String),
    /// An enumeration asked for without `more`.
    #[error("org.varlink.service.ExpectedMore")]
    ExpectedMore,
}

impl VarlinkError {
    /// Every error, for tests that check each one's encoding.
    pub const ALL: [VarlinkError; 7] = [
        VarlinkError::NoRecordFound,
        VarlinkError::BadService,
        VarlinkError::ServiceNotAvailable,
        VarlinkError::ConflictingRecordFound,
        VarlinkError::MethodNotFound(String::new()),
        VarlinkError::InvalidParameter(String::new()),
        VarlinkError::ExpectedMore,
    ];

    fn parameters(&self) -> Value {
        match self {
            VarlinkError::MethodNotFound(method) => json!({ "method": method }),
            VarlinkError::InvalidParameter(parameter) => json!({ "parameter": parameter }),
            _ => json!({}),
        }
    }
}

/// The envelope of a call; unknown envelope fields are ignored, as Varlink allows.
#[derive(serde::Deserialize)]
struct Envelope {
    /// `interface.Method`.
    method: String,
    /// The method's parameters; absent means none.
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    /// Several replies are wanted.
    #[serde(default)]
    more: bool,
    /// No reply is wanted.
    #[serde(default)]
    oneway: bool,
}

/// Decodes one message addressed to `service` (the socket's name).
pub fn decode_call(message: &[u8], service: &str) -> Result<Call, VarlinkError> {
    let envelope: Envelope = serde_json::from_slice(message)
        .map_err(|_| VarlinkError::InvalidParameter("method".into()))?;
    let mut parameters = Parameters(envelope.parameters.unwrap_or_default());
    let method = match envelope.method.as_str() {
        "org.varlink.service.GetInfo" => Method::Info,
        "io.systemd.UserDatabase.GetUserRecord" => Method::User {
            uid: parameters.id("uid")?,
            name: parameters.text("userName")?,
        },
        "io.systemd.UserDatabase.GetGroupRecord" => Method::Group {
            gid: parameters.id("gid")?,
            name: parameters.text("groupName")?,
        },
        "io.systemd.UserDatabase.GetMemberships" => Method::Memberships {
            user: parameters.text("userName")?,
            group: parameters.text("groupName")?,
        },
        other => return Err(VarlinkError::MethodNotFound(other.to_owned())),
    };
    if method != Method::Info && parameters.text("service")?.as_deref() != Some(service) {
        return Err(VarlinkError::BadService);
    }
    // Filters this door does not apply (fuzzyNames, dispositionMask, uidMin, ...): the spec
    // has clients filter themselves after InvalidParameter.
    if let Some(unknown) = parameters.0.keys().next() {
        return Err(VarlinkError::InvalidParameter(unknown.clone()));
    }
    Ok(Call {
        method,
        more: envelope.more,
        oneway: envelope.oneway,
    })
}

/// A call's parameters; each read takes its key out, so what remains is unknown.
struct Parameters(Map<String, Value>);

impl Parameters {
    /// An optional uid or gid (null counts as absent).
    fn id(&mut self, key: &str) -> Result<Option<u32>, VarlinkError> {
        match self.0.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .map(Some)
                .ok_or_else(|| VarlinkError::InvalidParameter(key.to_owned())),
        }
    }

    /// An optional string (null counts as absent).
    fn text(&mut self, key: &str) -> Result<Option<String>, VarlinkError> {
        match self.0.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(VarlinkError::InvalidParameter(key.to_owned())),
        }
    }
}

/// Appends one reply carrying `parameters`, with `continues` when more replies follow.
pub fn encode_reply(out: &mut Vec<u8>, parameters: &Value, continues: bool) {
    let reply = if continues {
        json!({ "parameters": parameters, "continues": true })
    } else {
        json!({ "parameters": parameters })
    };
    push_message(out, &reply);
}

/// Appends an error reply.
pub fn encode_error(out: &mut Vec<u8>, error: &VarlinkError) {
    push_message(
        out,
        &json!({ "error": error.to_string(), "parameters": error.parameters() }),
    );
}

fn push_message(out: &mut Vec<u8>, message: &Value) {
    // A `Value` always serializes; JSON text never holds a raw NUL (it is escaped).
    if serde_json::to_writer(&mut *out, message).is_ok() {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "io.qam";

    fn call(text: &str) -> Result<Call, VarlinkError> {
        decode_call(text.as_bytes(), SERVICE)
    }

    #[test]
    fn the_calls_nss_systemd_makes_decode() {
        let by_name = call(
            r#"{"method":"io.systemd.UserDatabase.GetUserRecord","parameters":{"userName":"alice","service":"io.qam"}}"#,
        );
        assert_eq!(
            by_name.unwrap(),
            Call {
                method: Method::User {
                    uid: None,
                    name: Some("alice".into())
                },
                more: false,
                oneway: false
            }
        );
        let all = call(r#"{"method":"io.systemd.UserDatabase.GetMemberships","parameters":{"service":"io.qam","groupName":null},"more":true}"#).unwrap();
        assert!(all.more);
        assert_eq!(
            all.method,
            Method::Memberships {
                user: None,
                group: None
            }
        );
        let by_gid = call(
            r#"{"method":"io.systemd.UserDatabase.GetGroupRecord","parameters":{"gid":70000,"service":"io.qam"}}"#,
        );
        assert!(matches!(
            by_gid.unwrap().method,
            Method::Group {
                gid: Some(70_000),
                name: None
            }
        ));
    }

    #[test]
    fn wrong_service_methods_and_parameters_are_refused() {
        let cases = [
            (
                r#"{"method":"io.systemd.UserDatabase.GetUserRecord","parameters":{"userName":"a"}}"#,
                VarlinkError::BadService,
            ),
            (
                r#"{"method":"io.systemd.UserDatabase.GetUserRecord","parameters":{"service":"io.systemd.Home"}}"#,
                VarlinkError::BadService,
            ),
            (
                r#"{"method":"io.systemd.UserDatabase.Delete","parameters":{"service":"io.qam"}}"#,
                VarlinkError::MethodNotFound("io.systemd.UserDatabase.Delete".into()),
            ),
            (
                r#"{"method":"io.systemd.UserDatabase.GetUserRecord","parameters":{"uid":-1,"service":"io.qam"}}"#,
                VarlinkError::InvalidParameter("uid".into()),
            ),
            (
                r#"{"method":"io.systemd.UserDatabase.GetUserRecord","parameters":{"uid":4294967296,"service":"io.qam"}}"#,
                VarlinkError::InvalidParameter("uid".into()),
            ),
            (
                r#"{"method":"io.systemd.UserDatabase.GetUserRecord","parameters":{"userName":7,"service":"io.qam"}}"#,
                VarlinkError::InvalidParameter("userName".into()),
            ),
            (
                r#"{"method":"io.systemd.UserDatabase.GetUserRecord","parameters":{"fuzzyNames":["al"],"service":"io.qam"}}"#,
                VarlinkError::InvalidParameter("fuzzyNames".into()),
            ),
            ("not json", VarlinkError::InvalidParameter("method".into())),
        ];
        for (text, expected) in cases {
            assert_eq!(call(text).unwrap_err(), expected, "{text}");
        }
    }

    #[test]
    fn replies_and_errors_are_nul_terminated_json() {
        let mut out = Vec::new();
        encode_reply(&mut out, &json!({"a": 1}), true);
        encode_reply(&mut out, &json!({"a": "\u{0}"}), false);
        for error in VarlinkError::ALL {
            encode_error(&mut out, &error);
        }
        let messages: Vec<Value> = out
            .split(|&byte| byte == 0)
            .filter(|part| !part.is_empty())
            .map(|part| serde_json::from_slice(part).unwrap())
            .collect();
        assert_eq!(messages.len(), 2 + VarlinkError::ALL.len());
        assert_eq!(messages[0]["continues"], true);
        assert_eq!(messages[1].get("continues"), None);
        assert_eq!(messages[1]["parameters"]["a"], "\u{0}");
        assert_eq!(
            messages[2]["error"],
            "io.systemd.UserDatabase.NoRecordFound"
        );
        assert!(messages[2..]
            .iter()
            .all(|message| message["parameters"].is_object()));
    }
}
