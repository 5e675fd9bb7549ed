//! [`ApiJson`]: a JSON body extractor whose rejections are problem+json naming what was wrong.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::problem::{Problem, ProblemCode};

/// `axum::Json` with errors mapped to [`Problem`]s. Also a response type.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(problem_for(rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn problem_for(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            ProblemCode::UnsupportedMediaType,
            "send the body with Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(error) => {
            Problem::new(ProblemCode::MalformedBody, error.body_text())
        }
        JsonRejection::JsonDataError(error) => {
            // axum reports the path of the field at fault first: "amount: invalid type ...".
            let text = error.body_text();
            let detail = text
                .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                .unwrap_or(&text)
                .to_owned();
            let field = detail
                .split_once(": ")
                .map(|(path, _)| path)
                .filter(|path| !path.contains(' '))
                .map(str::to_owned);
            let problem = Problem::new(ProblemCode::InvalidField, detail.clone());
            match field {
                Some(field) => problem.with_field(field),
                None => problem,
            }
        }
        JsonRejection::BytesRejection(error) => {
            if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(ProblemCode::BodyTooLarge, error.body_text())
            } else {
                Problem::new(ProblemCode::MalformedBody, error.body_text())
            }
        }
        other => Problem::new(ProblemCode::MalformedBody, other.body_text()),
    }
}
