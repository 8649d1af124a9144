//! Outgoing mail (verification and reset links). Without SMTP configured — the development
//! default — each message is printed to the hub's console and kept as a `.eml` file in the
//! outbox folder (`<data_dir>/outbox`), where a developer or a test can pick up the link.

use std::path::PathBuf;

use anyhow::Context;

use crate::db::now_ms;

#[derive(Debug, Clone)]
pub struct Mailer {
    outbox: PathBuf,
    from: String,
}

#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

impl Mailer {
    pub fn new(outbox: PathBuf, from: String) -> Self {
        Self { outbox, from }
    }

    /// Delivers a message. Failures are logged, not returned: whether an address exists must
    /// not show in the answer of the request that triggered the mail.
    pub async fn send(&self, mail: Mail) {
        if let Err(e) = self.write_outbox(&mail).await {
            tracing::error!(error = %format!("{e:#}"), "could not deliver a mail");
        }
    }

    async fn write_outbox(&self, mail: &Mail) -> anyhow::Result<()> {
        tokio::fs::create_dir_all(&self.outbox)
            .await
            .with_context(|| format!("creating {}", self.outbox.display()))?;
        let name = format!("{}-{}.eml", now_ms(), uuid::Uuid::new_v4());
        let path = self.outbox.join(name);
        let text = format!(
            "From: {}\r\nTo: {}\r\nSubject: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
            self.from, mail.to, mail.subject, mail.body
        );
        tokio::fs::write(&path, text).await.with_context(|| format!("writing {}", path.display()))?;
        // Development mode: the console is the mailbox.
        tracing::info!(path = %path.display(), subject = %mail.subject, "mail (no SMTP configured):\n{}", mail.body);
        Ok(())
    }
}
