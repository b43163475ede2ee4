//! What a failed request to the object store means for the user: the S3 error code and
//! message instead of the raw XML body, and what to check when the credentials were
//! refused or the endpoint did not answer.

/// The text of a failed request, made readable, with what to check.
pub(super) fn explain(reason: &str) -> String {
    let mut text = match reason.find("<?xml") {
        Some(at) => {
            let tag = |name: &str| {
                let open = format!("<{name}>");
                let start = reason.find(&open)? + open.len();
                let end = reason[start..].find(&format!("</{name}>"))? + start;
                Some(reason[start..end].to_string())
            };
            let head = reason[..at].trim_end().trim_end_matches(':');
            match (tag("Code"), tag("Message")) {
                (Some(code), Some(message)) => format!("{head}: {code}: {message}"),
                (Some(code), None) => format!("{head}: {code}"),
                _ => reason.to_string(),
            }
        }
        None => reason.to_string(),
    };
    let refused = [
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "AccessDenied",
        "403 Forbidden",
    ];
    if refused.iter().any(|r| reason.contains(r)) {
        text.push_str(
            " (the object store refused these credentials: check AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or ~/.aws/credentials)",
        );
    } else if reason.contains("error sending request") || reason.contains("Connect") {
        text.push_str(
            " (no answer from the endpoint: is the object store running, and is \
             AWS_ENDPOINT_URL, or the endpoint given to `canopy init`, right?)",
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::explain;

    #[test]
    fn refused_credentials_name_what_to_check() {
        let raw = "Generic S3 error: Error performing GET http://h/b - Server returned non-2xx \
                   status code: 403 Forbidden: <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                   <Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we \
                   calculated does not match.</Message></Error>";
        let text = explain(raw);
        assert!(!text.contains("<?xml"), "{text}");
        assert!(
            text.contains("403 Forbidden: SignatureDoesNotMatch: The request signature"),
            "{text}"
        );
        assert!(text.contains("check AWS_ACCESS_KEY_ID"), "{text}");
    }

    #[test]
    fn an_endpoint_that_does_not_answer_names_the_variable() {
        let text = explain("Generic S3 error: after 3 retries - HTTP error: error sending request");
        assert!(text.contains("AWS_ENDPOINT_URL"), "{text}");
        assert_eq!(explain("something else"), "something else");
    }
}
