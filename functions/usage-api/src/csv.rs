//! A minimal RFC 4180 writer: CRLF line ends, and a field is quoted (with inner quotes
//! doubled) when it holds a comma, a quote, CR or LF.

/// Accumulates CSV text, one record at a time.
#[derive(Debug, Default)]
pub struct CsvWriter {
    text: String,
}

impl CsvWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one record.
    pub fn record<'a>(&mut self, fields: impl IntoIterator<Item = &'a str>) {
        for (i, field) in fields.into_iter().enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            if field.contains([',', '"', '\r', '\n']) {
                self.text.push('"');
                self.text.push_str(&field.replace('"', "\"\""));
                self.text.push('"');
            } else {
                self.text.push_str(field);
            }
        }
        self.text.push_str("\r\n");
    }

    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_with_separators_quotes_or_line_breaks_are_quoted() {
        let mut csv = CsvWriter::new();
        csv.record(["a", "b,c", "say \"hi\"", "two\nlines", ""]);
        csv.record(["1"]);
        assert_eq!(
            csv.finish(),
            "a,\"b,c\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n1\r\n"
        );
    }
}
