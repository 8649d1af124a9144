//! German and English texts of the web pages. The language comes from the `lang` cookie (set by
//! the switch in the header), else from the browser's Accept-Language; German is the default.

use axum::http::HeaderMap;
use axum_extra::extract::CookieJar;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    De,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::De => "de",
            Lang::En => "en",
        }
    }

    pub fn from_request(headers: &HeaderMap) -> Lang {
        let jar = CookieJar::from_headers(headers);
        match jar.get("lang").map(|c| c.value()) {
            Some("en") => return Lang::En,
            Some("de") => return Lang::De,
            _ => {}
        }
        let accept = headers.get("accept-language").and_then(|v| v.to_str().ok()).unwrap_or("");
        for part in accept.split(',') {
            let tag = part.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if tag.starts_with("de") {
                return Lang::De;
            }
            if tag.starts_with("en") {
                return Lang::En;
            }
        }
        Lang::De
    }

    /// The text for `key`; the key itself when a translation is missing (visible in tests).
    pub fn t(self, key: &'static str) -> &'static str {
        match TEXTS.iter().find(|(k, ..)| *k == key) {
            Some((_, de, en)) => match self {
                Lang::De => de,
                Lang::En => en,
            },
            None => key,
        }
    }
}

/// (key, German, English)
const TEXTS: &[(&str, &str, &str)] = &[
    ("tagline", "Medizinische Bilder sicher austauschen – ohne CD.", "Exchange medical images securely – no CD needed."),
    ("nav.send", "Studien senden", "Send studies"),
    ("nav.mine", "Meine Sendungen", "My sendings"),
    ("nav.inbound", "Eingang", "Inbound"),
    ("nav.shares", "Freigaben", "Shares"),
    ("nav.manage", "Einrichtung verwalten", "Manage community"),
    ("nav.admin", "Hub-Verwaltung", "Hub admin"),
    ("nav.account", "Konto", "Account"),
    ("nav.audit", "Protokoll", "Audit trail"),
    ("audit.title", "Zugriffsprotokoll", "Audit trail"),
    (
        "audit.intro",
        "Wer hat wann was getan – Zugriffe, Code-Eingaben (auch fehlgeschlagene), Downloads und Änderungen. Einträge enthalten nur Kennungen, keine Patientendaten; jeder Aufruf dieser Seite wird selbst protokolliert.",
        "Who did what and when – access, code redemptions (failed ones too), downloads and changes. Records hold identifiers only, no patient data; each view of this page is itself recorded.",
    ),
    ("audit.person", "Person (E-Mail)", "Person (email)"),
    ("audit.action", "Aktion", "Action"),
    ("audit.actor", "Kennung (user:…, connector:…, share:…)", "Principal (user:…, connector:…, share:…)"),
    ("audit.study", "Study Instance UID", "Study Instance UID"),
    ("audit.share", "Freigabe (ID)", "Share (ID)"),
    ("audit.transfer", "Sendung (ID)", "Transfer (ID)"),
    ("audit.from", "Von (UTC)", "From (UTC)"),
    ("audit.to", "Bis (UTC)", "To (UTC)"),
    ("audit.export", "Export dieser Auswahl", "Export this selection"),
    ("audit.none", "Keine Einträge für diese Auswahl.", "No records for this selection."),
    ("audit.when", "Zeit", "Time"),
    ("audit.who", "Wer", "Who"),
    ("audit.object", "Objekt", "Object"),
    ("audit.result", "Ergebnis", "Result"),
    ("audit.detail", "Details", "Detail"),
    (
        "audit.more",
        "Die neuesten 500 Einträge; für ältere den Zeitraum eingrenzen oder exportieren.",
        "The newest 500 records; narrow the dates or export for older ones.",
    ),
    ("nav.logout", "Abmelden", "Sign out"),
    ("nav.login", "Anmelden", "Sign in"),
    ("nav.register", "Registrieren", "Register"),
    ("lang.switch", "Sprache", "Language"),
    ("email", "E-Mail-Adresse", "Email address"),
    ("password", "Passwort", "Password"),
    ("password.new", "Neues Passwort (mind. 10 Zeichen)", "New password (at least 10 characters)"),
    ("name", "Name", "Name"),
    ("practice", "Praxis / Einrichtung", "Practice / institution"),
    ("address", "Anschrift", "Address"),
    ("phone", "Telefon", "Phone"),
    ("login.title", "Anmelden", "Sign in"),
    ("login.submit", "Anmelden", "Sign in"),
    ("login.with", "Anmelden mit", "Sign in with"),
    ("login.forgot", "Passwort vergessen?", "Forgot your password?"),
    ("login.noaccount", "Noch kein Konto? Als Zuweiser registrieren", "No account yet? Register as a referrer"),
    ("register.title", "Als Zuweiser registrieren", "Register as a referrer"),
    (
        "register.intro",
        "Die Kliniken sehen diese Angaben, wenn Sie ihnen Studien senden.",
        "Clinics see these details when you send them studies.",
    ),
    ("register.submit", "Registrieren", "Register"),
    (
        "register.done",
        "Fast geschafft: Wir haben Ihnen einen Link zur Bestätigung Ihrer E-Mail-Adresse gesendet.",
        "Almost done: we have sent you a link to confirm your email address.",
    ),
    (
        "verify.done",
        "Ihre E-Mail-Adresse ist bestätigt. Sie können sich jetzt anmelden.",
        "Your email address is confirmed. You can sign in now.",
    ),
    ("forgot.title", "Passwort zurücksetzen", "Reset your password"),
    ("forgot.submit", "Link senden", "Send link"),
    ("forgot.done", "Wenn ein Konto diese Adresse hat, ist ein Link unterwegs.", "If an account has this address, a link is on its way."),
    ("reset.submit", "Passwort speichern", "Save password"),
    ("reset.done", "Ihr Passwort ist geändert. Bitte melden Sie sich an.", "Your password is changed. Please sign in."),
    ("setup.title", "Erstes Administratorkonto anlegen", "Create the first admin account"),
    ("setup.submit", "Konto anlegen", "Create account"),
    ("mine.title", "Meine Sendungen", "My sendings"),
    ("mine.none", "Sie haben noch keine Studien gesendet.", "You have not sent any studies yet."),
    ("send.title", "Studien senden", "Send studies"),
    ("send.search", "Einrichtung suchen (Name, Ort oder Code)", "Find an institution (name, city or code)"),
    ("send.search.submit", "Suchen", "Search"),
    ("send.here", "Hierhin senden", "Send here"),
    ("send.noresults", "Keine Einrichtung gefunden.", "No institution found."),
    ("send.to", "Senden an", "Send to"),
    ("send.reason", "Anlass / Fragestellung", "Reason / clinical question"),
    ("send.appointment", "Termin des Patienten", "Patient's appointment"),
    ("send.urgency", "Dringlichkeit", "Urgency"),
    ("urgency.routine", "Normal", "Routine"),
    ("urgency.urgent", "Dringend", "Urgent"),
    ("connector.healthy", "in Ordnung", "healthy"),
    ("connector.degraded", "eingeschränkt", "degraded"),
    ("connector.unreachable", "nicht erreichbar", "unreachable"),
    ("connector.unknown", "noch nie gemeldet", "never seen"),
    ("connector.heartbeat", "letzte Meldung", "last heartbeat"),
    ("connector.retrying", "wird wiederholt", "retrying"),
    ("connector.since", "seit", "since"),
    ("connector.target.ok", "in Ordnung", "ok"),
    ("connector.waiting", "wartend", "waiting"),
    ("transfer.targets", "Ablage in der Einrichtung", "Storage at the site"),
    ("target.stored", "gespeichert", "stored"),
    ("target.pending", "ausstehend", "pending"),
    ("target.retrying", "wird wiederholt", "retrying"),
    ("target.failed", "fehlgeschlagen", "failed"),
    ("target.optional", "optional", "optional"),
    ("target.last", "letzte Antwort", "last answer"),
    ("send.files", "Dateien, ZIP oder CD-Inhalt wählen", "Choose files, a ZIP or a CD's content"),
    ("send.folder", "Ordner wählen (z. B. die CD)", "Choose a folder (e.g. the CD)"),
    ("send.drop", "… oder hierher ziehen", "… or drop them here"),
    ("send.found", "Gefunden", "Found"),
    ("send.submit", "Senden", "Send"),
    (
        "send.approval",
        "Diese Einrichtung nimmt nur Studien von freigegebenen Zuweisern an.",
        "This institution only accepts studies from referrers it approved.",
    ),
    ("send.request", "Freigabe anfragen", "Ask for approval"),
    ("send.requested", "Freigabe angefragt – die Einrichtung entscheidet.", "Approval requested – the institution decides."),
    ("transfer.title", "Sendung", "Sending"),
    ("transfer.state", "Status", "State"),
    ("transfer.sent", "Gesendet", "Sent"),
    ("transfer.from", "Von", "From"),
    ("transfer.to", "An", "To"),
    ("transfer.patient", "Patient", "Patient"),
    ("transfer.birth", "Geburtsdatum", "Date of birth"),
    ("transfer.pid", "Patienten-ID", "Patient ID"),
    ("transfer.studies", "Studien", "Studies"),
    ("transfer.images", "Bilder", "Images"),
    ("transfer.size", "Größe", "Size"),
    ("transfer.note", "Notiz", "Note"),
    ("transfer.history", "Verlauf", "History"),
    ("transfer.view", "Ansehen", "View"),
    ("transfer.ohif", "Im Viewer öffnen", "Open in viewer"),
    ("transfer.download", "Als ZIP herunterladen", "Download as ZIP"),
    ("transfer.done", "Als erledigt markieren", "Mark done"),
    ("transfer.reject", "Ablehnen", "Reject"),
    ("transfer.message", "Nachricht an den Absender", "Message to the sender"),
    ("transfer.series", "Serien", "Series"),
    ("state.draft", "Entwurf", "Draft"),
    ("state.sent", "Gesendet", "Sent"),
    ("state.received", "Von der Klinik abgeholt", "Received by the clinic"),
    ("state.stored", "Im PACS gespeichert", "Stored in the PACS"),
    ("state.failed", "Fehlgeschlagen", "Failed"),
    ("state.done", "Erledigt", "Done"),
    ("state.rejected", "Abgelehnt", "Rejected"),
    ("inbound.title", "Eingang", "Inbound"),
    ("inbound.search", "Suche (Patient, ID, Geburtsdatum, Absender)", "Search (patient, ID, birth date, sender)"),
    ("inbound.none", "Keine Sendungen.", "No sendings."),
    ("inbound.all", "alle", "all"),
    ("inbound.filter", "Filtern", "Filter"),
    ("viewer.title", "Bildbetrachter", "Viewer"),
    ("viewer.prev", "Vorheriges Bild", "Previous image"),
    ("viewer.next", "Nächstes Bild", "Next image"),
    ("manage.members", "Mitglieder", "Members"),
    ("manage.add", "Mitglied hinzufügen", "Add member"),
    ("manage.role", "Rolle", "Role"),
    ("manage.remove", "Entfernen", "Remove"),
    ("manage.referrers", "Zuweiser-Freigaben", "Referrer approvals"),
    ("manage.approve", "Freigeben", "Approve"),
    ("manage.settings", "Einstellungen", "Settings"),
    ("manage.requires_approval", "Nur freigegebene Zuweiser dürfen senden", "Only approved referrers may send"),
    ("manage.accepts_inbound", "Nimmt Studien an", "Accepts studies"),
    ("manage.share_days", "Standard-Gültigkeit von Zugangscodes (Tage)", "Default lifetime of access codes (days)"),
    ("manage.contact", "Kontakt", "Contact"),
    ("save", "Speichern", "Save"),
    ("admin.create", "Einrichtung anlegen", "Create a community"),
    ("admin.code", "Code (leer: wird erzeugt)", "Code (empty: generated)"),
    ("admin.city", "Ort", "City"),
    ("admin.departments", "Abteilungen (durch Komma getrennt)", "Departments (comma-separated)"),
    ("admin.communities", "Einrichtungen", "Communities"),
    ("account.title", "Ihr Konto", "Your account"),
    ("account.tokens", "Zugangstoken für die API", "API access tokens"),
    ("account.token.name", "Wofür?", "What for?"),
    ("account.token.days", "Gültig (Tage)", "Valid (days)"),
    ("account.token.create", "Token erzeugen", "Create token"),
    ("account.token.once", "Nur jetzt sichtbar – kopieren Sie es:", "Shown only now – copy it:"),
    ("account.link", "Verknüpfen mit", "Link with"),
    ("back", "Zurück", "Back"),
    ("error", "Fehler", "Error"),
];
