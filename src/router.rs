//! Turns a request into the ordered chain of models to try. Explicit routing resolves the ids a
//! client named (`model`, then OpenRouter-style `models`) through the catalog and appends their
//! configured fallbacks; adaptive routing (`auto`) will meet it here.

use std::sync::Arc;

use crate::catalog::{Catalog, Model};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("no model requested")]
    NoModel,
    #[error("unknown model `{0}`")]
    UnknownModel(String),
}

/// The requested models in order, then the configured fallbacks of each, breadth first, each
/// model once.
pub fn explicit_chain(
    catalog: &Catalog,
    requested: &[String],
) -> Result<Vec<Arc<Model>>, RouteError> {
    if requested.is_empty() {
        return Err(RouteError::NoModel);
    }
    let mut chain: Vec<Arc<Model>> = Vec::new();
    for id in requested {
        let model = catalog
            .model(id)
            .ok_or_else(|| RouteError::UnknownModel(id.clone()))?;
        push_unique(&mut chain, model);
    }
    let mut next = 0;
    while next < chain.len() {
        for fallback in chain[next].fallbacks.clone() {
            if let Some(model) = catalog.model(&fallback) {
                push_unique(&mut chain, model);
            }
        }
        next += 1;
    }
    Ok(chain)
}

fn push_unique(chain: &mut Vec<Arc<Model>>, model: &Arc<Model>) {
    if !chain.iter().any(|m| m.id == model.id) {
        chain.push(model.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn catalog() -> Catalog {
        let text = r#"
            [[providers]]
            name = "p"
            kind = "openai"
            base_url = "http://127.0.0.1:1/v1"
            [[models]]
            id = "p/a"
            input_per_mtok = 1
            output_per_mtok = 1
            context = 100
            provider = "p"
            fallbacks = ["p/b"]
            [[models]]
            id = "p/b"
            input_per_mtok = 1
            output_per_mtok = 1
            context = 100
            provider = "p"
            fallbacks = ["p/c", "p/a"]
            [[models]]
            id = "p/c"
            input_per_mtok = 1
            output_per_mtok = 1
            context = 100
            provider = "p"
        "#;
        let config = Config::parse(text, Path::new("t.toml")).unwrap();
        Catalog::build(&config, Path::new("t.toml"), |_| None).unwrap()
    }

    fn ids(chain: &[Arc<Model>]) -> Vec<&str> {
        chain.iter().map(|m| m.id.as_str()).collect()
    }

    #[test]
    fn fallbacks_follow_transitively_without_repeats() {
        let c = catalog();
        assert_eq!(
            ids(&explicit_chain(&c, &["p/a".into()]).unwrap()),
            ["p/a", "p/b", "p/c"]
        );
    }

    #[test]
    fn requested_models_come_before_configured_fallbacks() {
        let c = catalog();
        let chain = explicit_chain(&c, &["p/c".into(), "p/a".into()]).unwrap();
        assert_eq!(ids(&chain), ["p/c", "p/a", "p/b"]);
    }

    #[test]
    fn unknown_models_are_errors() {
        let c = catalog();
        assert_eq!(
            explicit_chain(&c, &["p/a".into(), "x/y".into()]).unwrap_err(),
            RouteError::UnknownModel("x/y".into())
        );
        assert_eq!(explicit_chain(&c, &[]).unwrap_err(), RouteError::NoModel);
    }
}
