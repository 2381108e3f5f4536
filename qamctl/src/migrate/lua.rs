//! A reader for the Lua table literals Prosody writes as data files (`return { ... };`):
//! strings, numbers, booleans and nested tables, parsed as data and never executed.

use std::collections::BTreeMap;

/// Deepest table nesting accepted (account files are one level deep).
const MAX_DEPTH: usize = 16;

/// A Lua value as Prosody's serializer writes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Lua strings are byte strings: Prosody's salts and keys are ASCII, passwords may not be.
    Str(Vec<u8>),
    Number(f64),
    Bool(bool),
    Nil,
    Table(BTreeMap<String, Value>),
}

/// Why a data file is not a Lua literal qam reads; `offset` is the byte where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Prosody data literal at byte {offset}: {why}")]
pub struct LuaError {
    /// The byte where reading stopped, so the admin can find the fault in the file.
    pub offset: usize,
    /// What was expected or wrong there, in words, for the admin's error list.
    pub why: &'static str,
}

/// Parses `return <table>;` (the trailing `;` optional), as in `accounts/<user>.dat`.
pub fn parse_data_file(text: &[u8]) -> Result<BTreeMap<String, Value>, LuaError> {
    let mut reader = Reader { text, at: 0 };
    reader.skip_space();
    reader.keyword("return")?;
    let value = reader.value(0)?;
    reader.skip_space();
    if reader.peek() == Some(b';') {
        reader.at += 1;
    }
    reader.skip_space();
    if reader.at != text.len() {
        return Err(reader.error("text after the table"));
    }
    match value {
        Value::Table(table) => Ok(table),
        _ => Err(reader.error("the file does not return a table")),
    }
}

/// A cursor over the file's bytes.
struct Reader<'a> {
    /// The whole file.
    text: &'a [u8],
    /// Offset of the next unread byte.
    at: usize,
}

impl Reader<'_> {
    fn error(&self, why: &'static str) -> LuaError {
        LuaError {
            offset: self.at,
            why,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        loop {
            while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
                self.at += 1;
            }
            if self.text[self.at..].starts_with(b"--") {
                while self.peek().is_some_and(|b| b != b'\n') {
                    self.at += 1;
                }
            } else {
                return;
            }
        }
    }

    fn keyword(&mut self, word: &str) -> Result<(), LuaError> {
        if self.text[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(())
        } else {
            Err(self.error("expected `return`"))
        }
    }

    fn identifier(&mut self) -> Option<String> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.at += 1;
        }
        (self.at > start && !self.text[start].is_ascii_digit())
            .then(|| String::from_utf8_lossy(&self.text[start..self.at]).into_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Value, LuaError> {
        self.skip_space();
        match self.peek() {
            Some(b'{') => self.table(depth + 1),
            Some(quote @ (b'"' | b'\'')) => self.string(quote).map(Value::Str),
            Some(b'-' | b'0'..=b'9' | b'.') => self.number(),
            Some(_) => match self.identifier().as_deref() {
                Some("true") => Ok(Value::Bool(true)),
                Some("false") => Ok(Value::Bool(false)),
                Some("nil") => Ok(Value::Nil),
                _ => Err(self.error("expected a value")),
            },
            None => Err(self.error("the file ends inside a value")),
        }
    }

    fn table(&mut self, depth: usize) -> Result<Value, LuaError> {
        if depth > MAX_DEPTH {
            return Err(self.error("tables nested too deeply"));
        }
        self.at += 1; // `{`
        let mut table = BTreeMap::new();
        let mut next_index = 1u64;
        loop {
            self.skip_space();
            match self.peek() {
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Value::Table(table));
                }
                None => return Err(self.error("the file ends inside a table")),
                _ => {}
            }
            let key = self.table_key(depth)?;
            let key = match key {
                Some(key) => {
                    self.skip_space();
                    if self.peek() != Some(b'=') {
                        return Err(self.error("expected `=`"));
                    }
                    self.at += 1;
                    key
                }
                None => {
                    let key = next_index.to_string();
                    next_index += 1;
                    key
                }
            };
            let value = self.value(depth)?;
            table.insert(key, value);
            self.skip_space();
            match self.peek() {
                Some(b',' | b';') => self.at += 1,
                Some(b'}') => {}
                _ => return Err(self.error("expected `,`, `;` or `}`")),
            }
        }
    }

    /// `[expr] =` or `name =`; `None` for a positional entry (the cursor is left at its value).
    fn table_key(&mut self, depth: usize) -> Result<Option<String>, LuaError> {
        if self.peek() == Some(b'[') {
            self.at += 1;
            let key = match self.value(depth)? {
                Value::Str(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                _ => return Err(self.error("a key must be a string, number or boolean")),
            };
            self.skip_space();
            if self.peek() != Some(b']') {
                return Err(self.error("expected `]`"));
            }
            self.at += 1;
            return Ok(Some(key));
        }
        let start = self.at;
        if let Some(name) = self.identifier() {
            self.skip_space();
            if self.peek() == Some(b'=') && self.text.get(self.at + 1) != Some(&b'=') {
                return Ok(Some(name));
            }
        }
        self.at = start;
        Ok(None)
    }

    fn number(&mut self) -> Result<Value, LuaError> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.'))
        {
            self.at += 1;
        }
        std::str::from_utf8(&self.text[start..self.at])
            .ok()
            .and_then(|text| text.parse::<f64>().ok())
            .map(Value::Number)
            .ok_or_else(|| self.error("not a number"))
    }

    fn string(&mut self, quote: u8) -> Result<Vec<u8>, LuaError> {
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let Some(byte) = self.peek() else {
                return Err(self.error("the file ends inside a string"));
            };
            self.at += 1;
            match byte {
                b'\\' => self.escape(&mut out)?,
                b'\n' => return Err(self.error("a line break inside a string")),
                _ if byte == quote => return Ok(out),
                _ => out.push(byte),
            }
        }
    }

    /// One escape after `\`, as Lua 5.1–5.4 and Prosody's serializer write them.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), LuaError> {
        let Some(byte) = self.peek() else {
            return Err(self.error("the file ends inside an escape"));
        };
        self.at += 1;
        let plain = match byte {
            b'n' | b'\n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'a' => 0x07,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'v' => 0x0b,
            b'\\' | b'"' | b'\'' => byte,
            b'x' => {
                let digits = self
                    .text
                    .get(self.at..self.at + 2)
                    .and_then(|d| std::str::from_utf8(d).ok())
                    .and_then(|d| u8::from_str_radix(d, 16).ok())
                    .ok_or_else(|| self.error("bad \\x escape"))?;
                self.at += 2;
                digits
            }
            b'0'..=b'9' => {
                let start = self.at - 1;
                while self.at - start < 3 && self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.at += 1;
                }
                std::str::from_utf8(&self.text[start..self.at])
                    .ok()
                    .and_then(|d| d.parse::<u8>().ok())
                    .ok_or_else(|| self.error("a decimal escape above 255"))?
            }
            b'z' => {
                while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
                    self.at += 1;
                }
                return Ok(());
            }
            _ => return Err(self.error("unknown escape")),
        };
        out.push(plain);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_internal_hashed_account_file() {
        let file = br#"return {
	["iteration_count"] = 4096;
	["salt"] = "9c4b6b1c-1234-4a9b-8d0e-0f0e0d0c0b0a";
	["server_key"] = "0a0b";
	["stored_key"] = "0c0d";
};
"#;
        let table = parse_data_file(file).expect("parses");
        assert_eq!(table["iteration_count"], Value::Number(4096.0));
        assert_eq!(
            table["salt"],
            Value::Str(b"9c4b6b1c-1234-4a9b-8d0e-0f0e0d0c0b0a".to_vec())
        );
    }

    #[test]
    fn reads_escapes_nested_tables_and_bare_keys() {
        let file = b"return { password = \"a\\\"b\\\\c\\065\\x42\\n\"; roles = { [\"prosody:user\"] = true, 'x' }, n = -1.5 }";
        let table = parse_data_file(file).expect("parses");
        assert_eq!(table["password"], Value::Str(b"a\"b\\cAB\n".to_vec()));
        let Value::Table(roles) = &table["roles"] else {
            panic!("roles is a table");
        };
        assert_eq!(roles["prosody:user"], Value::Bool(true));
        assert_eq!(roles["1"], Value::Str(b"x".to_vec()));
        assert_eq!(table["n"], Value::Number(-1.5));
    }

    #[test]
    fn code_is_refused_not_run() {
        for bad in [
            &b"os.execute('rm -rf /')"[..],
            b"return { a = os.getenv('HOME') }",
            b"return { a = 1 } ; os.exit()",
            b"return { a = \"unterminated }",
            b"return { a = \"\\300\" }",
            b"return ",
            b"return 5",
            b"",
        ] {
            assert!(
                parse_data_file(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut file = b"return ".to_vec();
        file.extend(std::iter::repeat_n(b'{', 10_000));
        assert!(parse_data_file(&file).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes at all: an answer or an error, never a panic or a hang.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_data_file(&bytes);
        }

        /// Tables of strings written the way Prosody's serializer writes them read back as they were.
        #[test]
        fn serialized_string_tables_read_back(
            entries in proptest::collection::btree_map("[a-z_]{1,12}", proptest::collection::vec(any::<u8>(), 0..40), 0..8)
        ) {
            let mut file = b"return {\n".to_vec();
            for (key, value) in &entries {
                file.extend_from_slice(format!("\t[\"{key}\"] = \"").as_bytes());
                for byte in value {
                    match byte {
                        b'"' | b'\\' => file.extend_from_slice(&[b'\\', *byte]),
                        0x20..=0x7e => file.push(*byte),
                        _ => file.extend_from_slice(format!("\\{byte:03}").as_bytes()),
                    }
                }
                file.extend_from_slice(b"\";\n");
            }
            file.extend_from_slice(b"};\n");
            let table = parse_data_file(&file).expect("a serialized table parses");
            prop_assert_eq!(table.len(), entries.len());
            for (key, value) in entries {
                prop_assert_eq!(&table[&key], &Value::Str(value));
            }
        }
    }
}
