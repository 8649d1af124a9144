//! `ferry-hub serve` (the default): the hub itself.

use crate::config::Config;

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let app = crate::Application::build(config).await?;
    let addr = app.local_addr();
    // Scripts wait for this line to learn the port.
    // Ignored when nobody reads stdout (a daemon, or a reader that left).
    {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "Ferry hub listening on http://{addr}");
    }
    tracing::info!(%addr, "ready");
    if let Some(link) = crate::accounts::setup_link(app.state()).await? {
        use std::io::Write;
        // Ignored when nobody reads stdout (a daemon); `ferry-hub admin create-user` works too.
        let _ = writeln!(std::io::stdout(), "No admin account yet. Create the first one (link valid for 24 hours): {link}");
    }
    app.run_until_stopped().await
}
