//! How a phone reads what the server sends it: the rules by which the live
//! [`Agent`](super::Agent) objects to a request.
//!
//! A phone answers what it objects to and carries on; the objection is a
//! problem, which fails the verdict. It objects to:
//! - a NOTIFY outside its subscriptions: another Call-ID, a To-tag other
//!   than the tag its SUBSCRIBE gave, or a From-tag other than the
//!   notifier's once that is known (from the 2xx, or from the first NOTIFY
//!   when that comes first or the 2xx was lost: RFC 6665 4.1.2.4);
//! - Call-Info it cannot read in an INVITE offered to it or in a call-info
//!   NOTIFY: an appearance-index that is not a number, an appearance-state
//!   outside the model's vocabulary;
//! - a call-info NOTIFY without a readable Subscription-State.
//!
//! Pure, like the agent: messages in, problems out.

use crate::sip::dialog::Dialog;
use crate::sip::headers::{appearances, Appearance, SubState, SubscriptionState};
use crate::sip::Message;

/// The appearances in a request's Call-Info, or the problem a phone
/// reports when they cannot be read.
pub fn call_info(req: &Message) -> Result<Vec<Appearance>, String> {
    appearances(req.headers("Call-Info")).map_err(|e| {
        format!(
            "{} with unreadable Call-Info: {e}",
            req.method().unwrap_or_default()
        )
    })
}

/// Whether a NOTIFY ends its subscription, or the problem a phone reports
/// when its Subscription-State cannot be read.
pub fn terminates(notify: &Message) -> Result<bool, String> {
    notify
        .header("Subscription-State")
        .and_then(SubscriptionState::parse)
        .map(|s| s.state == SubState::Terminated)
        .ok_or_else(|| "NOTIFY without a readable Subscription-State".to_string())
}

/// The problem of a NOTIFY that belongs to none of a phone's subscriptions.
pub fn outside_subscriptions(notify: &Message) -> String {
    format!(
        "NOTIFY outside our subscriptions (Call-ID {})",
        notify.call_id()
    )
}

/// A subscription as its subscriber knows it.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub dialog: Dialog,
    /// The notifier's side is known (its tag, route and target).
    pub confirmed: bool,
}

impl Subscription {
    /// The subscription a SUBSCRIBE opens, not yet confirmed.
    pub fn new(dialog: Dialog) -> Subscription {
        Subscription {
            dialog,
            confirmed: false,
        }
    }

    /// Whether a NOTIFY belongs to this subscription: its Call-ID, the
    /// subscriber's tag as its To-tag, and the notifier's tag as its
    /// From-tag once that is known.
    pub fn holds(&self, notify: &Message) -> bool {
        let d = &self.dialog;
        d.call_id == notify.call_id()
            && notify.to_tag().as_deref() == Some(d.local_tag.as_str())
            && (!self.confirmed || notify.from_tag() == d.remote_tag)
    }

    /// A 2xx to the SUBSCRIBE establishes the dialog with the notifier's
    /// tag (the first one does; refreshes change nothing).
    pub fn answered(&mut self, ok: &Message) {
        if !self.confirmed {
            self.establish(ok.to_tag(), Dialog::route_set(ok, true), ok);
        }
    }

    /// A NOTIFY the subscription [holds](Self::holds) establishes it when no
    /// 2xx has (RFC 6665 4.1.2.4: the NOTIFY may come first, and over UDP the
    /// 2xx may be lost). Returns whether this one did.
    pub fn notified(&mut self, notify: &Message) -> bool {
        if self.confirmed {
            return false;
        }
        // The subscriber is the NOTIFY's UAS: its route set is the NOTIFY's
        // Record-Route in order.
        self.establish(notify.from_tag(), Dialog::route_set(notify, false), notify);
        true
    }

    fn establish(&mut self, remote_tag: Option<String>, route: Vec<String>, msg: &Message) {
        self.dialog.remote_tag = remote_tag;
        self.dialog.route = route;
        if let Some(target) = msg.contact_uri() {
            self.dialog.remote_target = target;
        }
        self.confirmed = true;
    }
}
