//! What a principal may see, as an SQL condition: the rows its holdings link, matched by origin
//! *and* UID (see the module above). Every DICOMweb search and retrieve applies it.

/// Which column of `transfer_instances` a scoped column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Study,
    Series,
    Instance,
}

impl Level {
    fn column(self) -> &'static str {
        match self {
            Level::Study => "study_uid",
            Level::Series => "series_uid",
            Level::Instance => "sop_instance_uid",
        }
    }
}

/// The set of instances a principal may see, as a filter the queries apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StudyScope {
    All,
    /// What the transfers of this user (sent, or received by their communities) carry.
    Transfers {
        user_id: String,
    },
    /// What the (sent) transfers to one community carry: its connector's view.
    Community {
        community_id: String,
    },
    /// What one share holds: its holder's view.
    Share {
        share_id: String,
    },
}

impl StudyScope {
    /// An SQL condition restricting the row named by (`origin`, `column`) — a row of the given
    /// level, keyed by its origin and UID — to the rows this scope's holdings link, or `None` when
    /// unrestricted. Rows are matched by origin *and* UID: a UID alone proves nothing, since
    /// anyone can write any UID into a file (see [`crate::index`]). `bind` adds a text parameter
    /// and returns its placeholder.
    pub fn condition(&self, origin: &str, column: &str, level: Level, bind: &mut dyn FnMut(String) -> String) -> Option<String> {
        let field = level.column();
        let row = format!("({origin}, {column})");
        match self {
            StudyScope::All => None,
            StudyScope::Transfers { user_id } => {
                let sender = bind(user_id.clone());
                let member = bind(user_id.clone());
                let staff = bind(user_id.clone());
                Some(format!(
                    "({row} IN (SELECT ti.origin, ti.{field} FROM transfer_instances ti \
                     JOIN transfers t ON t.id = ti.transfer_id \
                     WHERE t.sender_id = {sender} OR (t.state <> 'draft' AND t.community_id IN \
                     (SELECT m.community_id FROM memberships m WHERE m.user_id = {member}))) \
                     OR {row} IN (SELECT si.origin, si.{field} FROM share_instances si JOIN shares s ON s.id = si.share_id \
                     WHERE s.purged_at IS NULL AND s.community_id IN \
                     (SELECT m.community_id FROM memberships m WHERE m.user_id = {staff})))"
                ))
            }
            StudyScope::Community { community_id } => {
                let c = bind(community_id.clone());
                Some(format!(
                    "{row} IN (SELECT ti.origin, ti.{field} FROM transfer_instances ti \
                     JOIN transfers t ON t.id = ti.transfer_id WHERE t.state <> 'draft' AND t.community_id = {c})"
                ))
            }
            StudyScope::Share { share_id } => {
                let sh = bind(share_id.clone());
                Some(format!("{row} IN (SELECT si.origin, si.{field} FROM share_instances si WHERE si.share_id = {sh})"))
            }
        }
    }
}
