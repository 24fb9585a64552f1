//! Mixing rules as data: `(pattern → action)`, first match wins. Patterns are checkpoint
//! key globs where `*` matches any run of characters.

use crate::error::MixError;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MixAction {
    /// β·real + (1−β)·synthetic.
    Beta(f64),
    /// Take the real-data model's tensor.
    Real,
    /// Take the synthetic-data model's tensor.
    Synthetic,
    /// Both inputs must hold the same bytes (frozen weights); either is taken.
    RequireIdentical,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MixRule {
    pub pattern: String,
    pub action: MixAction,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MixRules {
    pub rules: Vec<MixRule>,
}

/// The trained parts of SPHINX: the LLM and the projections into it. The four visual
/// encoders are frozen and fall outside, so they must be identical.
const TRAINED: [&str; 8] = [
    "*tok_embeddings.*",
    "*layers.*",
    "*norm.weight",
    "*output.weight",
    "*visual_proj.*",
    "*qformer_proj.*",
    "*start_img",
    "*end_img",
];

/// The encoders, which the LLM patterns must not catch (`*norm.weight` would).
const FROZEN: [&str; 4] = ["*clip.*", "*openclip_convnext_xxl.*", "*dinov2_vitg14.*", "*qformer.*"];

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl MixRules {
    /// One β for every trained weight; the frozen encoders must be identical.
    pub fn uniform(beta: f64) -> Self {
        let mut rules: Vec<MixRule> =
            FROZEN.iter().map(|p| MixRule { pattern: p.to_string(), action: MixAction::RequireIdentical }).collect();
        rules.extend(TRAINED.iter().map(|p| MixRule { pattern: p.to_string(), action: MixAction::Beta(beta) }));
        Self { rules }
    }

    /// User rules, tried before the uniform ones.
    pub fn with_overrides(beta: f64, overrides: Vec<MixRule>) -> Self {
        let mut r = Self::uniform(beta);
        r.rules.splice(0..0, overrides);
        r
    }

    /// Parses `PATTERN=β`, `PATTERN=real` or `PATTERN=synthetic`.
    pub fn parse_rule(s: &str) -> Result<MixRule, MixError> {
        let (pattern, value) = s.rsplit_once('=').ok_or_else(|| MixError::BadRule(format!("'{s}': expected PATTERN=β")))?;
        let action = match value.trim() {
            "real" => MixAction::Real,
            "synthetic" => MixAction::Synthetic,
            v => MixAction::Beta(v.parse().map_err(|_| MixError::BadRule(format!("'{s}': '{v}' is not a number, real or synthetic")))?),
        };
        Ok(MixRule { pattern: pattern.trim().to_string(), action })
    }

    /// The action for a tensor: the first matching rule, else `RequireIdentical`.
    pub fn action(&self, name: &str) -> MixAction {
        self.rules.iter().find(|r| glob_match(&r.pattern, name)).map_or(MixAction::RequireIdentical, |r| r.action)
    }

    /// Whether some β lies outside [0, 1].
    pub fn extrapolates(&self) -> bool {
        self.rules.iter().any(|r| matches!(r.action, MixAction::Beta(b) if !(0.0..=1.0).contains(&b)))
    }

    /// β outside [0, 1] extrapolates; it needs `allow_extrapolation`.
    pub fn validate(&self, allow_extrapolation: bool) -> Result<(), MixError> {
        for r in &self.rules {
            if let MixAction::Beta(b) = r.action {
                if !b.is_finite() || (!allow_extrapolation && !(0.0..=1.0).contains(&b)) {
                    return Err(MixError::BetaOutOfRange { pattern: r.pattern.clone(), beta: b });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*layers.*", "llma.layers.3.attention.wq.weight"));
        assert!(glob_match("llma.layers.1.*", "llma.layers.1.ffn_norm.weight"));
        assert!(!glob_match("llma.layers.1.*", "llma.layers.11.ffn_norm.weight"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "axxbyyc") && !glob_match("a*b*c", "axxcyyb"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn rules_apply_in_order() {
        let r = MixRules::with_overrides(
            0.5,
            vec![MixRules::parse_rule("*layers.0.*=real").unwrap(), MixRules::parse_rule("*layers.*=0.25").unwrap()],
        );
        assert_eq!(r.action("llma.layers.0.attention.wq.weight"), MixAction::Real);
        assert_eq!(r.action("llma.layers.1.attention.wq.weight"), MixAction::Beta(0.25));
        assert_eq!(r.action("llma.norm.weight"), MixAction::Beta(0.5));
        assert_eq!(r.action("llma.dinov2_vitg14.norm.weight"), MixAction::RequireIdentical);
        assert_eq!(r.action("llma.something.else"), MixAction::RequireIdentical);
    }

    #[test]
    fn beta_range() {
        assert!(MixRules::uniform(1.2).validate(false).is_err());
        assert!(MixRules::uniform(1.2).validate(true).is_ok());
        assert!(MixRules::uniform(f64::NAN).validate(true).is_err());
        assert!(MixRules::parse_rule("x=abc").is_err());
    }
}
