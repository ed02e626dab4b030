//! Routing profiles (`auto`, `auto:cheap`, `auto:best`, `auto:q0.8`) and the quality targets of
//! the relative ones: plain data that the config names and the policy applies, kept apart so
//! that neither has to know the other.

/// How much quality a request wants for its money.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Profile {
    /// `auto`: the cheapest model within `balanced` of the best predicted quality.
    Balanced,
    /// `auto:cheap`: the cheapest model within `cheap` of the best.
    Cheap,
    /// `auto:best`: the best predicted quality, whatever it costs.
    Best,
    /// `auto:q0.8`: the cheapest model predicted at or above this quality.
    Floor(f32),
}

impl Profile {
    /// Parses a `model` value: `auto`, `auto:cheap`, `auto:best`, `auto:q0.8`; `None` for an
    /// explicit model id.
    pub fn parse(model: &str) -> Option<Result<Profile, String>> {
        let rest = model.strip_prefix("auto")?;
        Some(match rest {
            "" | ":balanced" => Ok(Profile::Balanced),
            ":cheap" => Ok(Profile::Cheap),
            ":best" => Ok(Profile::Best),
            other => match other.strip_prefix(":q").map(str::parse::<f32>) {
                Some(Ok(q)) if (0.0..=1.0).contains(&q) => Ok(Profile::Floor(q)),
                _ => Err(format!(
                    "unknown routing profile `{model}`: use auto, auto:cheap, auto:best or \
                     auto:q<quality between 0 and 1>"
                )),
            },
        })
    }

    pub fn name(&self) -> String {
        match self {
            Profile::Balanced => "auto".into(),
            Profile::Cheap => "auto:cheap".into(),
            Profile::Best => "auto:best".into(),
            Profile::Floor(q) => format!("auto:q{q}"),
        }
    }
}

/// Quality targets of the relative profiles, as fractions of the best predicted quality.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Targets {
    pub balanced: f32,
    pub cheap: f32,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            balanced: 0.95,
            cheap: 0.80,
        }
    }
}
