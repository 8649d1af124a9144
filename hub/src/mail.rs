//! Outgoing mail (verification and reset links). With `mail.smtp_url` set, mails go out over
//! SMTP (lettre; STARTTLS or TLS as the URL says). Without it — the development default — each
//! message is kept as a `.eml` file (mode 0600) in the outbox folder (`<data_dir>/outbox`, 0700),
//! where a developer or a test can pick up the link. The log says only that a mail was written
//! and where: a link in it is a credential (a password reset signs its reader in), and logs
//! travel further than the data folder; the recipient's address is personal data.

use std::path::PathBuf;

use anyhow::Context;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::db::now_ms;

#[derive(Clone)]
pub struct Mailer {
    outbox: PathBuf,
    from: String,
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
}

#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

impl Mailer {
    pub fn new(outbox: PathBuf, from: String, smtp_url: Option<&str>) -> anyhow::Result<Self> {
        let smtp = match smtp_url {
            Some(url) => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| anyhow::anyhow!("mail.smtp_url is not a valid SMTP URL: {e}"))?
                    .timeout(Some(std::time::Duration::from_secs(20)))
                    .build(),
            ),
            None => None,
        };
        from.parse::<lettre::message::Mailbox>().map_err(|e| anyhow::anyhow!("mail.from is not a valid address ({from}): {e}"))?;
        Ok(Self { outbox, from, smtp })
    }

    /// Delivers a message. Failures are logged, not returned: whether an address exists must
    /// not show in the answer of the request that triggered the mail.
    pub async fn send(&self, mail: Mail) {
        let result = match &self.smtp {
            Some(smtp) => self.send_smtp(smtp, &mail).await,
            None => self.write_outbox(&mail).await,
        };
        if let Err(e) = result {
            // An SMTP server's answer may quote the recipient's address: never logged.
            let mut error = format!("{e:#}");
            if !mail.to.is_empty() {
                error = error.replace(mail.to.as_str(), "<recipient>");
            }
            tracing::error!(%error, "could not deliver a mail");
        }
    }

    async fn send_smtp(&self, smtp: &AsyncSmtpTransport<Tokio1Executor>, mail: &Mail) -> anyhow::Result<()> {
        let message = Message::builder()
            .from(self.from.parse()?)
            .to(mail.to.parse().context("recipient address")?)
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())?;
        smtp.send(message).await.context("SMTP delivery")?;
        tracing::info!(subject = %mail.subject, "mail sent over SMTP");
        Ok(())
    }

    async fn write_outbox(&self, mail: &Mail) -> anyhow::Result<()> {
        crate::files::create_dir_async(&self.outbox).await.with_context(|| format!("creating {}", self.outbox.display()))?;
        let name = format!("{}-{}.eml", now_ms(), uuid::Uuid::new_v4());
        let path = self.outbox.join(name);
        let text = format!(
            "From: {}\r\nTo: {}\r\nSubject: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
            self.from, mail.to, mail.subject, mail.body
        );
        crate::files::write_new(&path, text.into_bytes()).await.with_context(|| format!("writing {}", path.display()))?;
        // Where it is, never what it says or to whom.
        tracing::info!(path = %path.display(), "no SMTP configured: mail written to the outbox");
        Ok(())
    }
}
