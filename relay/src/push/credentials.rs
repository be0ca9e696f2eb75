//! The Google service-account key the relay signs its OAuth grants with: the JSON file the
//! Google Cloud console hands out (`client_email`, `private_key`, `token_uri`, `project_id`;
//! other keys are ignored), checked field by field when the relay starts.
//!
//! A field that is wrong is named in the error, and the error never carries any part of the
//! file's text: not the key, not a value, not the JSON parser's view of a value.

use super::https::https_uri;
use hyper::Uri;
use ring::signature::RsaKeyPair;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest service-account file read (Google's are about 2.3 KiB).
const MAX_FILE: u64 = 64 * 1024;

/// A checked service account: who signs, with which key, where grants go, and which Firebase
/// project messages are sent for.
#[derive(Clone)]
pub(crate) struct ServiceAccount {
    /// The account's e-mail: the JWT's `iss`.
    pub client_email: String,
    /// The account's RSA key (RS256 signatures).
    pub key: Arc<RsaKeyPair>,
    /// Where the JWT-bearer grant is posted (an `https://` URL): also the JWT's `aud`.
    pub token_uri: Uri,
    /// The Firebase project: the `{project_id}` of FCM's `messages:send` path.
    pub project_id: String,
}

impl fmt::Debug for ServiceAccount {
    /// The key is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

/// What is wrong with one field of the service-account file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldProblem {
    /// The key is absent.
    Missing,
    /// The value is not a JSON string.
    NotAString,
    /// The value is an empty string.
    Empty,
    /// `private_key`: not one PEM block with a PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE
    /// KEY`) key.
    NotPem,
    /// `private_key`: a PEM key that is not an RSA key of 2048 to 8192 bits (ring's reason).
    NotRsa(String),
    /// `token_uri`: not an absolute `https://` URL (plain `http://` is never used).
    NotHttps(&'static str),
    /// `project_id`: characters a Google Cloud project id cannot have (it goes into a URL path).
    NotAProjectId,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldProblem::Missing => f.write_str("is missing"),
            FieldProblem::NotAString => f.write_str("is not a string"),
            FieldProblem::Empty => f.write_str("is empty"),
            FieldProblem::NotPem => f.write_str(
                "is not a PEM-encoded private key (PKCS#8, as Google issues them, or PKCS#1)",
            ),
            FieldProblem::NotRsa(why) => {
                write!(f, "is not an RSA key of 2048 to 8192 bits ({why})")
            }
            FieldProblem::NotHttps(why) => write!(f, "is not an https:// URL ({why})"),
            FieldProblem::NotAProjectId => f.write_str(
                "is not a project id (letters, digits, '-', and for domain-scoped projects \
                 '.' and ':')",
            ),
        }
    }
}

/// Why the service-account file was refused. The message names the file and the field, never a
/// value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The file could not be read.
    #[error("cannot read the FCM service-account file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than any service-account key.
    #[error("the FCM service-account file {} is larger than 64 KiB", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a JSON object (the parser's message would quote the file: not shown).
    #[error("the FCM service-account file {} is not a JSON object", path.display())]
    NotAnObject {
        /// The file.
        path: PathBuf,
    },
    /// One field is wrong.
    #[error("the FCM service-account file {}: `{field}` {problem}", path.display())]
    Field {
        /// The file.
        path: PathBuf,
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        problem: FieldProblem,
    },
}

impl ServiceAccount {
    /// Reads and checks the service-account file at `path`.
    ///
    /// # Errors
    ///
    /// The file cannot be read, is not a JSON object, or a field is missing or wrong (the first
    /// in the order `client_email`, `private_key`, `token_uri`, `project_id`).
    pub(crate) fn load(path: &Path) -> Result<ServiceAccount, CredentialsError> {
        let read = |source| CredentialsError::Read {
            path: path.to_owned(),
            source,
        };
        let mut text = Vec::new();
        std::fs::File::open(path)
            .map_err(read)?
            .take(MAX_FILE + 1)
            .read_to_end(&mut text)
            .map_err(read)?;
        if text.len() as u64 > MAX_FILE {
            return Err(CredentialsError::TooLarge {
                path: path.to_owned(),
            });
        }
        Self::parse(&text).map_err(|error| match error {
            None => CredentialsError::NotAnObject {
                path: path.to_owned(),
            },
            Some((field, problem)) => CredentialsError::Field {
                path: path.to_owned(),
                field,
                problem,
            },
        })
    }

    /// The account in `json`; `Err(None)` if it is not a JSON object, else the first wrong
    /// field.
    fn parse(json: &[u8]) -> Result<ServiceAccount, Option<(&'static str, FieldProblem)>> {
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(json) else {
            return Err(None);
        };
        let client_email = string(&fields, "client_email")?.to_owned();
        let pem = string(&fields, "private_key")?;
        let key = key_pair(pem).map_err(|problem| Some(("private_key", problem)))?;
        let token_uri = https_uri(string(&fields, "token_uri")?)
            .map_err(|why| Some(("token_uri", FieldProblem::NotHttps(why))))?;
        let project_id = string(&fields, "project_id")?;
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':');
        if !project_id.chars().all(allowed) {
            return Err(Some(("project_id", FieldProblem::NotAProjectId)));
        }
        Ok(ServiceAccount {
            client_email,
            key: Arc::new(key),
            token_uri,
            project_id: project_id.to_owned(),
        })
    }
}

/// The non-empty string at `field`.
fn string<'a>(
    fields: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, Option<(&'static str, FieldProblem)>> {
    match fields.get(field) {
        None => Err(Some((field, FieldProblem::Missing))),
        Some(Value::String(text)) if text.is_empty() => Err(Some((field, FieldProblem::Empty))),
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(Some((field, FieldProblem::NotAString))),
    }
}

/// ring's RSA key pair from a PEM private key: PKCS#8 (what Google issues) or PKCS#1.
fn key_pair(pem: &str) -> Result<RsaKeyPair, FieldProblem> {
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| FieldProblem::NotPem)?;
    let key = match &der {
        PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
        _ => return Err(FieldProblem::NotRsa("an EC key".into())),
    };
    key.map_err(|rejected| FieldProblem::NotRsa(rejected.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_an_object_is_refused_without_quoting_it() {
        for text in ["", "[1]", "{\"private_key\": \"secret", "\"secret\""] {
            assert!(matches!(ServiceAccount::parse(text.as_bytes()), Err(None)));
        }
    }

    #[test]
    fn each_missing_or_mistyped_field_is_named() {
        let base = serde_json::json!({
            "client_email": "relay@example.iam.gserviceaccount.com",
            "private_key": "not a key",
            "token_uri": "https://oauth2.googleapis.com/token",
            "project_id": "demo",
        });
        for field in ["client_email", "private_key"] {
            let mut json = base.clone();
            json.as_object_mut().unwrap().remove(field);
            let error = ServiceAccount::parse(json.to_string().as_bytes()).err();
            assert_eq!(error, Some(Some((field, FieldProblem::Missing))));
            json[field] = Value::from(7);
            let error = ServiceAccount::parse(json.to_string().as_bytes()).err();
            assert_eq!(error, Some(Some((field, FieldProblem::NotAString))));
            json[field] = Value::from("");
            let error = ServiceAccount::parse(json.to_string().as_bytes()).err();
            assert_eq!(error, Some(Some((field, FieldProblem::Empty))));
        }
        let error = ServiceAccount::parse(base.to_string().as_bytes()).err();
        assert_eq!(error, Some(Some(("private_key", FieldProblem::NotPem))));
    }
}
