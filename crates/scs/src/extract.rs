//! axum extractors: the session is loaded from the store when a handler asks for it.

use axum_core::body::Body;
use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;

use crate::{Session, SessionRejection, Sessions};

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        self.response().map(Body::from)
    }
}

/// Loads the session (once per request, however many extractors ask). A load failure
/// rejects with the manager's error handler's response, so the handler does not run.
impl<S: Send + Sync> FromRequestParts<S> for Sessions {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Sessions::from_parts(&parts.headers, &parts.extensions).await
    }
}

/// Loads the session (once per request, however many extractors ask). A load failure
/// rejects with the manager's error handler's response, so the handler does not run.
impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Session::from_parts(&parts.headers, &parts.extensions).await
    }
}
