//! The macro behind `ops.rs`: from one table of operations it writes `Op`, `Request`, the
//! decoding of a request's fields, the `Serve` trait the daemon implements and the `Answer`.

/// Expands the table in `ops.rs`. Each entry reads
/// `Variant wire_name { field: Type, ... } -> AnswerType, grant: Grant, audited: bool;`
/// (no braces for an operation without fields). The wire name is also the name of the
/// operation's method in [`crate::ops::Serve`].
macro_rules! operations {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident $name:ident $({
            $($(#[$field_meta:meta])* $field:ident: $ty:ty),* $(,)?
        })? -> $answer:ty, grant: $grant:ident, audited: $audited:literal;
    )*) => {
        /// Every operation the daemon knows, by its wire name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Op {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Op {
            /// All operations, in protocol.md's order.
            pub const ALL: [Op; [$(Op::$variant),*].len()] = [$(Op::$variant),*];

            /// The wire name, e.g. `change_password`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Op::$variant => stringify!($name),)*
                }
            }

            /// Which peers may call the operation before the config names them.
            pub fn grant(self) -> Grant {
                match self {
                    $(Op::$variant => Grant::$grant,)*
                }
            }

            /// The names of the request's fields, in the table's order (protocol.md's).
            pub fn fields(self) -> &'static [&'static str] {
                match self {
                    $(Op::$variant => &[$($(stringify!($field)),*)?],)*
                }
            }

            /// Whether each call is logged with the peer for the audit trail.
            pub fn is_audited(self) -> bool {
                match self {
                    $(Op::$variant => $audited,)*
                }
            }
        }

        /// A typed request. Serialized by clients; the daemon decodes it with
        /// [`crate::wire::decode_request`].
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(tag = "op", rename_all = "snake_case")]
        pub enum Request {
            $($(#[doc = $doc])* $variant $({ $($(#[$field_meta])* $field: $ty),* })?,)*
        }

        impl Request {
            /// The operation this request calls.
            pub fn op(&self) -> Op {
                match self {
                    $(Request::$variant { .. } => Op::$variant,)*
                }
            }

            /// The username the request is about, if any (for audit logs; usernames are
            /// public): the field called `user`.
            pub fn user(&self) -> Option<&str> {
                match self {
                    $(Request::$variant $({ $($field),* })? => {
                        None $($(.or(user_field!($field, $field)))*)?
                    })*
                }
            }

            /// Runs the request on `server`, the daemon's implementation of every operation.
            pub async fn serve<S: Serve + Sync>(self, server: &S) -> Result<Answer, WireError> {
                Ok(match self {
                    $(Request::$variant $({ $($field),* })? => {
                        Answer::$variant(server.$name($($($field),*)?).await?)
                    })*
                })
            }
        }

        /// What answers the operations: one method per operation, named and typed as on the
        /// wire. The daemon implements it; a new operation does not compile until it does.
        pub trait Serve {
            $(
                $(#[doc = $doc])*
                fn $name(&self $($(, $field: $ty)*)?)
                    -> impl Future<Output = Result<$answer, WireError>> + Send;
            )*
        }

        /// Every success body, serialized flat into the answer object.
        #[derive(Debug, Serialize)]
        #[serde(untagged)]
        pub enum Answer {
            $($(#[doc = $doc])* $variant($answer),)*
        }

        /// Turns the fields read from a line into the request `op` names; missing required
        /// fields are named in the message.
        pub(crate) fn typed_request(op: Op, fields: RequestFields) -> Result<Request, String> {
            Ok(match op {
                $(Op::$variant => Request::$variant $({
                    $($field: FromField::from_field(fields.$field, stringify!($field), op)?),*
                })?,)*
            })
        }
    };
}

/// In `Request::user`: the value of the field called `user`; `None` for any other field.
macro_rules! user_field {
    (user, $value:ident) => {
        Some($value.as_str())
    };
    ($other:ident, $value:ident) => {{
        let _ = $value;
        None
    }};
}

pub(crate) use operations;
pub(crate) use user_field;
