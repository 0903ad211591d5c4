//! axum extractors.

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::{Session, Sessions};

/// Why a [`Session`] or [`Sessions`] could not be extracted: the `LoadAndSave` layer is
/// not on the route, or several managers are layered and the handler asked for one
/// `Session`. Both are programming errors; the response is a 500 naming the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRejection {
    /// No `LoadAndSave` layer ran for this request.
    MissingLayer,
    /// Several managers are layered: extract `Sessions` and pick one.
    Ambiguous,
}

impl std::fmt::Display for SessionRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::MissingLayer => "no session: the scs LoadAndSave layer is not on this route",
            Self::Ambiguous => {
                "several session managers are layered on this route: extract scs::Sessions and pick one by cookie name"
            }
        })
    }
}

impl std::error::Error for SessionRejection {}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        tracing::error!(rejection = %self, "session extractor");
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Sessions {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Sessions>()
            .cloned()
            .ok_or(SessionRejection::MissingLayer)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let sessions = parts
            .extensions
            .get::<Sessions>()
            .ok_or(SessionRejection::MissingLayer)?;
        let mut iter = sessions.iter();
        match (iter.next(), iter.next()) {
            (Some(session), None) => Ok(session.clone()),
            (Some(_), Some(_)) => Err(SessionRejection::Ambiguous),
            (None, _) => Err(SessionRejection::MissingLayer),
        }
    }
}
