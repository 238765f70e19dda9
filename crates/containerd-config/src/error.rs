/// Why a config could not be produced; every message names the file or
/// template and what in it is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Text that is not TOML.
    #[error("{origin} is not valid TOML: line {line}, column {column}: {message}")]
    Parse {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Valid TOML whose shape this module cannot edit without guessing.
    #[error("{origin}: {message}")]
    Shape { origin: String, message: String },
    /// A config version this module does not write, or a clash of versions.
    #[error("{0}")]
    Version(String),
    /// A template that does not render.
    #[error("template {name}{}: {message}", location(*.line, .source_line.as_deref()))]
    Template {
        name: String,
        line: Option<usize>,
        source_line: Option<String>,
        message: String,
    },
    /// A config that does not set what was asked.
    #[error("{origin} does not configure what the task asks: {}", .problems.join("; "))]
    NotAsAsked {
        origin: String,
        problems: Vec<String>,
    },
    /// Options that cannot make a config.
    #[error("{0}")]
    Invalid(String),
}

fn location(line: Option<usize>, text: Option<&str>) -> String {
    match (line, text) {
        (Some(n), Some(t)) => format!(", line {n} (`{}`)", t.trim()),
        (Some(n), None) => format!(", line {n}"),
        _ => String::new(),
    }
}

impl Error {
    /// The error for text that `toml_edit` refused, with the line and column
    /// counted from the byte offset it reports.
    pub(crate) fn parse(origin: &str, text: &str, err: &toml_edit::TomlError) -> Error {
        let offset = err.span().map_or(0, |s| s.start).min(text.len());
        let before = &text[..floor_char_boundary(text, offset)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Error::Parse {
            origin: origin.to_string(),
            line,
            column,
            message: err.message().trim().to_string(),
        }
    }

    pub(crate) fn shape(origin: &str, message: impl Into<String>) -> Error {
        Error::Shape {
            origin: origin.to_string(),
            message: message.into(),
        }
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}
