//! The baseline the load test and the gRPC bench compare capnagent with: a
//! JSON Web Token check as a service would typically write it by hand with
//! the `jsonwebtoken` crate. HS256 with one shared secret; the claims say
//! who calls (`sub`), which tool (`tool`), the largest amount allowed
//! (`max_amount_cents`) and until when (`exp`).

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claims of a tool-call token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who calls.
    pub sub: String,
    /// The one tool the token allows.
    pub tool: String,
    /// The largest amount a call may carry, in cents.
    pub max_amount_cents: u64,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Bad signature, expired, malformed, or a claim missing.
    Invalid(String),
    /// A valid token for another tool.
    WrongTool,
    /// The call's amount exceeds `max_amount_cents`.
    AmountTooLarge,
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Invalid(why) => write!(f, "invalid token: {why}"),
            JwtError::WrongTool => f.write_str("token not valid for this tool"),
            JwtError::AmountTooLarge => f.write_str("amount exceeds the token's maximum"),
        }
    }
}

impl std::error::Error for JwtError {}

/// One HS256 secret: mints and checks tokens. `Debug` never shows it.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    /// Keys for the HS256 `secret` (not empty); tokens must carry `sub`,
    /// `tool`, `max_amount_cents` and an unexpired `exp`.
    pub fn hs256(secret: &[u8]) -> Result<JwtKeys, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(JwtKeys {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            validation,
        })
    }

    /// A signed token with `claims`.
    pub fn mint(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// The claims of `token` when its signature and expiry are valid and
    /// it names `tool`.
    pub fn check(&self, token: &str, tool: &str) -> Result<Claims, JwtError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| JwtError::Invalid(e.to_string()))?;
        if data.claims.tool != tool {
            return Err(JwtError::WrongTool);
        }
        Ok(data.claims)
    }

    /// [`check`](Self::check), then the call's `amount_cents` against the
    /// token's maximum.
    pub fn check_amount(
        &self,
        token: &str,
        tool: &str,
        amount_cents: u64,
    ) -> Result<Claims, JwtError> {
        let claims = self.check(token, tool)?;
        if amount_cents > claims.max_amount_cents {
            return Err(JwtError::AmountTooLarge);
        }
        Ok(claims)
    }
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("algorithm", &"HS256")
            .field("secret", &format_args!(".."))
            .finish()
    }
}

/// Seconds since the Unix epoch, `exp`'s unit.
pub fn unix_seconds() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "agent:loadtest".into(),
            tool: "checkout.purchase".into(),
            max_amount_cents: 5000,
            exp,
        }
    }

    #[test]
    fn checks_signature_expiry_tool_and_amount() {
        let keys = JwtKeys::hs256(b"0123456789abcdef0123456789abcdef").unwrap();
        let token = keys.mint(&claims(unix_seconds() + 3600)).unwrap();
        let ok = keys
            .check_amount(&token, "checkout.purchase", 5000)
            .unwrap();
        assert_eq!(ok.sub, "agent:loadtest");
        assert_eq!(
            keys.check_amount(&token, "checkout.purchase", 5001),
            Err(JwtError::AmountTooLarge)
        );
        assert_eq!(keys.check(&token, "bank.wire"), Err(JwtError::WrongTool));
        let other = JwtKeys::hs256(b"another secret, another issuer...").unwrap();
        assert!(matches!(
            other.check(&token, "checkout.purchase"),
            Err(JwtError::Invalid(_))
        ));
        // Expired beyond the default leeway (60 s).
        let expired = keys.mint(&claims(unix_seconds() - 3600)).unwrap();
        assert!(matches!(
            keys.check(&expired, "checkout.purchase"),
            Err(JwtError::Invalid(_))
        ));
        assert!(!format!("{keys:?}").contains("0123"));
        assert!(JwtKeys::hs256(b"").is_err());
    }
}
