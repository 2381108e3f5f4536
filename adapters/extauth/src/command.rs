//! The extauth commands (`auth:U:S:P`, `isuser:U:S`, …) parsed from one request's bytes.
//! User and server never hold `:`; the password is the last field and may.

use qam_client::Password;

/// One parsed request. `server` is the XMPP host the user belongs to.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Auth {
        user: String,
        server: String,
        password: Password,
    },
    IsUser {
        user: String,
        server: String,
    },
    SetPass {
        user: String,
        server: String,
        password: Password,
    },
    TryRegister {
        user: String,
        server: String,
        password: Password,
    },
    RemoveUser {
        user: String,
        server: String,
    },
    /// `removeuser3:U:S:P`: remove after checking the password (never called by ejabberd 23.01).
    RemoveUser3 {
        user: String,
        server: String,
    },
}

/// Why a request could not be understood; it is answered false. Never holds request bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty request")]
    Empty,
    #[error("unknown command")]
    UnknownCommand,
    #[error("wrong number of fields for `{0}`")]
    FieldCount(&'static str),
    #[error("empty user or server in `{0}`")]
    EmptyField(&'static str),
    #[error("request is not valid UTF-8")]
    NotUtf8,
}

impl Command {
    /// Parses `cmd:user:server[:password]`.
    pub fn parse(bytes: &[u8]) -> Result<Command, ParseError> {
        if bytes.is_empty() {
            return Err(ParseError::Empty);
        }
        let mut fields = bytes.splitn(4, |&byte| byte == b':');
        let name = fields.next().unwrap_or_default();
        let (name, has_password): (&'static str, bool) = match name {
            b"auth" => ("auth", true),
            b"isuser" => ("isuser", false),
            b"setpass" => ("setpass", true),
            b"tryregister" => ("tryregister", true),
            b"removeuser" => ("removeuser", false),
            b"removeuser3" => ("removeuser3", true),
            _ => return Err(ParseError::UnknownCommand),
        };
        let user = fields.next().ok_or(ParseError::FieldCount(name))?;
        let server = fields.next().ok_or(ParseError::FieldCount(name))?;
        let password = fields.next();
        if password.is_some() != has_password {
            return Err(ParseError::FieldCount(name));
        }
        if user.is_empty() || server.is_empty() {
            return Err(ParseError::EmptyField(name));
        }
        let user = text(user)?;
        let server = text(server)?;
        let password = match password {
            Some(bytes) => Password::new(text(bytes)?),
            None => Password::default(),
        };
        Ok(match name {
            "auth" => Command::Auth {
                user,
                server,
                password,
            },
            "isuser" => Command::IsUser { user, server },
            "setpass" => Command::SetPass {
                user,
                server,
                password,
            },
            "tryregister" => Command::TryRegister {
                user,
                server,
                password,
            },
            "removeuser" => Command::RemoveUser { user, server },
            _ => Command::RemoveUser3 { user, server },
        })
    }

    /// The command's name on the wire, for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Auth { .. } => "auth",
            Command::IsUser { .. } => "isuser",
            Command::SetPass { .. } => "setpass",
            Command::TryRegister { .. } => "tryregister",
            Command::RemoveUser { .. } => "removeuser",
            Command::RemoveUser3 { .. } => "removeuser3",
        }
    }

    /// The user and the XMPP host named by the request.
    pub fn account(&self) -> (&str, &str) {
        match self {
            Command::Auth { user, server, .. }
            | Command::IsUser { user, server }
            | Command::SetPass { user, server, .. }
            | Command::TryRegister { user, server, .. }
            | Command::RemoveUser { user, server }
            | Command::RemoveUser3 { user, server } => (user, server),
        }
    }
}

fn text(bytes: &[u8]) -> Result<String, ParseError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ParseError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Command, ParseError> {
        Command::parse(text.as_bytes())
    }

    #[test]
    fn every_command_parses() {
        let (u, s) = (String::from("alice"), String::from("example.org"));
        let p = || Password::from("pw");
        assert_eq!(
            parse("auth:alice:example.org:pw"),
            Ok(Command::Auth {
                user: u.clone(),
                server: s.clone(),
                password: p()
            })
        );
        assert_eq!(
            parse("isuser:alice:example.org"),
            Ok(Command::IsUser {
                user: u.clone(),
                server: s.clone()
            })
        );
        assert_eq!(
            parse("setpass:alice:example.org:pw"),
            Ok(Command::SetPass {
                user: u.clone(),
                server: s.clone(),
                password: p()
            })
        );
        assert_eq!(
            parse("tryregister:alice:example.org:pw"),
            Ok(Command::TryRegister {
                user: u.clone(),
                server: s.clone(),
                password: p()
            })
        );
        assert_eq!(
            parse("removeuser:alice:example.org"),
            Ok(Command::RemoveUser {
                user: u.clone(),
                server: s.clone()
            })
        );
        assert_eq!(
            parse("removeuser3:alice:example.org:pw"),
            Ok(Command::RemoveUser3 { user: u, server: s })
        );
    }

    #[test]
    fn the_password_keeps_its_colons() {
        match parse("auth:alice:example.org:a:b::c:") {
            Ok(Command::Auth { password, .. }) => assert_eq!(password.expose(), "a:b::c:"),
            other => panic!("{other:?}"),
        }
        match parse("setpass:alice:example.org::") {
            Ok(Command::SetPass { password, .. }) => assert_eq!(password.expose(), ":"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert_eq!(parse(""), Err(ParseError::Empty));
        assert_eq!(parse("login:a:b:c"), Err(ParseError::UnknownCommand));
        assert_eq!(parse("AUTH:a:b:c"), Err(ParseError::UnknownCommand));
        assert_eq!(parse("auth"), Err(ParseError::FieldCount("auth")));
        assert_eq!(parse("auth:a:b"), Err(ParseError::FieldCount("auth")));
        assert_eq!(parse("isuser:a"), Err(ParseError::FieldCount("isuser")));
        assert_eq!(parse("isuser:a:b:c"), Err(ParseError::FieldCount("isuser")));
        assert_eq!(parse("auth::b:c"), Err(ParseError::EmptyField("auth")));
        assert_eq!(parse("isuser:a:"), Err(ParseError::EmptyField("isuser")));
        assert_eq!(Command::parse(b"auth:a:b:\xff"), Err(ParseError::NotUtf8));
        assert_eq!(
            Command::parse(b"\x00\x01\x02"),
            Err(ParseError::UnknownCommand)
        );
    }

    #[test]
    fn an_empty_password_is_passed_on() {
        match parse("auth:a:b:") {
            Ok(Command::Auth { password, .. }) => assert!(password.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}
