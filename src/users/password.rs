//! Argon2id password hashing on the blocking pool, with bounded concurrency so a burst of
//! logins cannot take every core or unbounded memory (each hash holds `memory_kib`).

use std::sync::{Arc, OnceLock};

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString},
    Algorithm, Argon2, Params, Version,
};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// OWASP's recommended Argon2id memory cost: 19 MiB.
pub const OWASP_MEMORY_KIB: u32 = 19 * 1024;
/// OWASP's recommended Argon2id iteration count with 19 MiB.
pub const OWASP_ITERATIONS: u32 = 2;

/// Hashes and verifies passwords; cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Arc<Argon2<'static>>,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when a login names no user, so the
    /// response time does not reveal whether an account exists.
    decoy: Arc<OnceLock<String>>,
}

impl PasswordHasher {
    /// `memory_kib` and `iterations` are Argon2id costs (parallelism 1); at most
    /// `concurrency` hashes run at once.
    pub fn new(memory_kib: u32, iterations: u32, concurrency: usize) -> Result<Self, String> {
        let params = Params::new(memory_kib, iterations, 1, None).map_err(|e| e.to_string())?;
        Ok(PasswordHasher {
            argon: Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params)),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            decoy: Arc::new(OnceLock::new()),
        })
    }

    /// The PHC string (`$argon2id$v=19$m=...`) of `password` with a fresh salt.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let argon = self.argon.clone();
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| ApiError::Internal(format!("argon2 hash: {e}").into()))
        })
        .await
    }

    /// Whether `password` matches the PHC string `phc` (the costs stored in it apply).
    /// `None` verifies against a decoy so that unknown accounts take as long as known ones.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, ApiError> {
        let argon = self.argon.clone();
        let (phc, real) = match phc {
            Some(p) => (p, true),
            None => (self.decoy().await?, false),
        };
        self.run(move || {
            let parsed = PasswordHash::new(&phc)
                .map_err(|e| ApiError::Internal(format!("stored hash unreadable: {e}").into()))?;
            Ok(real && argon.verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
    }

    async fn decoy(&self) -> Result<String, ApiError> {
        if let Some(d) = self.decoy.get() {
            return Ok(d.clone());
        }
        let h = self.hash(uuid::Uuid::now_v7().to_string()).await?;
        Ok(self.decoy.get_or_init(|| h).clone())
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ApiError::Internal(Box::new(e)))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn default_costs_are_owasp_argon2id() {
        let h = PasswordHasher::new(OWASP_MEMORY_KIB, OWASP_ITERATIONS, 1).unwrap();
        let phc = h.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify("correct horse".into(), Some(phc.clone())).await.unwrap());
        assert!(!h.verify("wrong horse".into(), Some(phc)).await.unwrap());
        assert!(!h.verify("anything".into(), None).await.unwrap());
    }
}
