//! The template file (TOML): who each message goes to and what it says,
//! with fields written `{{ name }}` (minijinja). HTML bodies are
//! HTML-escaped; files it names are relative to its own folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use apimail_core::Charset;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use serde::Deserialize;

use crate::filters;

/// One address field: a string or a list of them.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(untagged)]
pub enum Addresses {
    /// None.
    #[default]
    None,
    /// One template, which may render to several addresses (`a, b`).
    One(String),
    /// Several templates.
    Many(Vec<String>),
}

impl Addresses {
    fn items(&self) -> Vec<&str> {
        match self {
            Addresses::None => Vec::new(),
            Addresses::One(one) => vec![one.as_str()],
            Addresses::Many(many) => many.iter().map(String::as_str).collect(),
        }
    }
}

/// The template file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateFile {
    /// The sender; the account's address when absent.
    pub from: Option<String>,
    /// Recipients.
    #[serde(default)]
    pub to: Addresses,
    /// Copies.
    #[serde(default)]
    pub cc: Addresses,
    /// Blind copies.
    #[serde(default)]
    pub bcc: Addresses,
    /// Where replies go.
    #[serde(default)]
    pub reply_to: Addresses,
    /// The subject.
    pub subject: String,
    /// The plain-text body.
    pub text: Option<String>,
    /// The plain-text body from a file.
    pub text_file: Option<PathBuf>,
    /// The HTML body (fields HTML-escaped).
    pub html: Option<String>,
    /// The HTML body from a file.
    pub html_file: Option<PathBuf>,
    /// Attachment paths, which may use fields.
    #[serde(default)]
    pub attach: Vec<String>,
    /// `utf-8` (default) or `iso-2022-jp`.
    pub charset: Option<String>,
    /// Further headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Why a template cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file (or a body file) cannot be read.
    #[error("cannot read `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, or unknown keys.
    #[error("`{}` is not a valid template: {message}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// What toml says.
        message: String,
    },
    /// A field's template does not parse.
    #[error("`{}`: `{key}` is not a valid template: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The template key.
        key: String,
        /// What minijinja says.
        message: String,
    },
    /// Something else is wrong with it.
    #[error("`{}`: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What.
        message: String,
    },
}

/// A loaded template, ready to render rows.
#[derive(Debug)]
pub struct Template {
    /// Where it was read from.
    pub path: PathBuf,
    /// The folder its relative paths start from.
    pub base: PathBuf,
    /// The charset of the messages.
    pub charset: Charset,
    /// Whether a From template was given.
    pub has_from: bool,
    env: Environment<'static>,
    /// Template names, by role.
    names: Names,
}

#[derive(Debug, Default)]
struct Names {
    from: Option<String>,
    to: Vec<String>,
    cc: Vec<String>,
    bcc: Vec<String>,
    reply_to: Vec<String>,
    subject: String,
    text: Option<String>,
    html: Option<String>,
    attach: Vec<String>,
    headers: Vec<(String, String)>,
}

/// A template rendered for one row.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// From, if the template has it.
    pub from: Option<String>,
    /// To, each a rendered item (may hold several addresses).
    pub to: Vec<String>,
    /// Cc.
    pub cc: Vec<String>,
    /// Bcc.
    pub bcc: Vec<String>,
    /// Reply-To.
    pub reply_to: Vec<String>,
    /// Subject.
    pub subject: String,
    /// Text body.
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
    /// Attachment paths, resolved against the template's folder.
    pub attach: Vec<PathBuf>,
    /// Further headers.
    pub headers: Vec<(String, String)>,
}

/// A rendering failure: the template key and minijinja's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// Which key of the template.
    pub key: String,
    /// What went wrong.
    pub message: String,
}

impl Template {
    /// Reads and compiles the template at `path`.
    pub fn load(path: &Path) -> Result<Template, TemplateError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| TemplateError::Read {
                path: p.to_owned(),
                source,
            })
        };
        let file: TemplateFile = toml::from_str(&read(path)?).map_err(|e| TemplateError::Toml {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let invalid = |message: String| TemplateError::Invalid {
            path: path.to_owned(),
            message,
        };
        let charset = match file
            .charset
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("utf-8" | "utf8") => Charset::Utf8,
            Some("iso-2022-jp") => Charset::Iso2022Jp,
            Some(other) => {
                return Err(invalid(format!(
                    "charset `{other}` is not supported; use \"utf-8\" or \"iso-2022-jp\""
                )));
            }
        };
        let text = match (file.text, &file.text_file) {
            (Some(_), Some(_)) => {
                return Err(invalid("give `text` or `text_file`, not both".into()));
            }
            (Some(t), None) => Some(t),
            (None, Some(p)) => Some(read(&base.join(p))?),
            (None, None) => None,
        };
        let html = match (file.html, &file.html_file) {
            (Some(_), Some(_)) => {
                return Err(invalid("give `html` or `html_file`, not both".into()));
            }
            (Some(t), None) => Some(t),
            (None, Some(p)) => Some(read(&base.join(p))?),
            (None, None) => None,
        };
        if text.is_none() && html.is_none() {
            return Err(invalid(
                "it has no body: add `text`, `html`, `text_file` or `html_file`".into(),
            ));
        }
        if file.to.items().is_empty() && file.cc.items().is_empty() && file.bcc.items().is_empty() {
            return Err(invalid(
                "it has no recipients: add `to = \"{{ email }}\"`".into(),
            ));
        }

        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_keep_trailing_newline(true);
        env.add_filter("date", filters::date);
        env.add_filter("number", filters::number);
        let mut names = Names::default();
        let add = |env: &mut Environment<'static>, name: String, source: String| {
            env.add_template_owned(name.clone(), source)
                .map_err(|e| TemplateError::Syntax {
                    path: path.to_owned(),
                    key: name.trim_end_matches(".html").to_owned(),
                    message: e.detail().unwrap_or("syntax error").to_owned(),
                })?;
            Ok::<String, TemplateError>(name)
        };
        if let Some(from) = file.from.clone() {
            names.from = Some(add(&mut env, "from".into(), from)?);
        }
        for (role, list, out) in [
            ("to", &file.to, &mut names.to),
            ("cc", &file.cc, &mut names.cc),
            ("bcc", &file.bcc, &mut names.bcc),
            ("reply_to", &file.reply_to, &mut names.reply_to),
        ] {
            for (i, item) in list.items().into_iter().enumerate() {
                out.push(add(&mut env, format!("{role}[{i}]"), item.to_owned())?);
            }
        }
        names.subject = add(&mut env, "subject".into(), file.subject)?;
        if let Some(text) = text {
            names.text = Some(add(&mut env, "text".into(), text)?);
        }
        if let Some(html) = html {
            names.html = Some(add(&mut env, "html.html".into(), html)?);
        }
        for (i, item) in file.attach.into_iter().enumerate() {
            names
                .attach
                .push(add(&mut env, format!("attach[{i}]"), item)?);
        }
        for (header, value) in file.headers {
            let name = add(&mut env, format!("headers.{header}"), value)?;
            names.headers.push((header, name));
        }
        Ok(Template {
            path: path.to_owned(),
            base,
            charset,
            has_from: file.from.is_some(),
            env,
            names,
        })
    }

    /// Every field the template uses.
    pub fn fields(&self) -> BTreeSet<String> {
        let mut fields = BTreeSet::new();
        for (name, template) in self.env.templates() {
            let _ = name;
            fields.extend(template.undeclared_variables(false));
        }
        fields
    }

    /// Renders every key for one row's fields.
    pub fn render(&self, fields: &BTreeMap<String, String>) -> Result<Rendered, RenderError> {
        let context = Value::from_serialize(fields);
        let one = |name: &str| -> Result<String, RenderError> {
            let key = name.trim_end_matches(".html").to_owned();
            let template = self.env.get_template(name).map_err(|e| RenderError {
                key: key.clone(),
                message: e.to_string(),
            })?;
            template.render(&context).map_err(|e| RenderError {
                key,
                message: match e.detail() {
                    Some(detail) => detail.to_owned(),
                    None => e.kind().to_string(),
                },
            })
        };
        let many = |names: &[String]| names.iter().map(|n| one(n)).collect::<Result<Vec<_>, _>>();
        Ok(Rendered {
            from: self.names.from.as_deref().map(one).transpose()?,
            to: many(&self.names.to)?,
            cc: many(&self.names.cc)?,
            bcc: many(&self.names.bcc)?,
            reply_to: many(&self.names.reply_to)?,
            subject: one(&self.names.subject)?,
            text: self.names.text.as_deref().map(one).transpose()?,
            html: self.names.html.as_deref().map(one).transpose()?,
            attach: many(&self.names.attach)?
                .into_iter()
                .map(|p| self.base.join(p.trim()))
                .collect(),
            headers: self
                .names
                .headers
                .iter()
                .map(|(header, name)| Ok((header.clone(), one(name)?)))
                .collect::<Result<_, RenderError>>()?,
        })
    }
}
