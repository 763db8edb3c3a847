//! Seeded defects of the embedded server. Each one is a mistake a real SCA
//! server could make; the fault tests prove the harness catches every one
//! in the right case, channel and event.

use std::fmt;

macro_rules! faults {
    ($($var:ident => $name:literal : $what:literal),+ $(,)?) => {
        /// A defect the embedded server can be started with (`--fault NAME`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Fault { $($var),+ }

        impl Fault {
            pub const ALL: &'static [Fault] = &[$(Fault::$var),+];

            pub fn name(self) -> &'static str {
                match self { $(Fault::$var => $name),+ }
            }

            pub fn description(self) -> &'static str {
                match self { $(Fault::$var => $what),+ }
            }
        }
    };
}

faults! {
    NoCancelToLoser => "no-cancel-to-loser":
        "when one phone answers, the other phone's INVITE is never cancelled (it keeps ringing and is never released)",
    WrongAppearanceIndex => "wrong-appearance-index":
        "an inbound call is put on appearance 2 although appearance 1 is idle",
    CoveredAsOk => "covered-as-ok":
        "EventRinging on the shared-line phones says CallState Ok instead of Covered",
    DropLoserPartyDeleted => "drop-loser-party-deleted":
        "call monitoring omits EventCallPartyDeleted for the phone that did not answer",
    DuplicateRinging => "duplicate-ringing":
        "EventRinging is sent twice to the second phone of the line",
    NoOnHook => "no-onhook":
        "after the far end hangs up, the shared-line phone gets no EventOnHook",
    MalformedNotify => "malformed-notify":
        "call-info NOTIFYs after the first carry an unparseable CSeq",
    NoPrivateInfo => "no-private-info":
        "a line seizure is not reported to T-Library (no EventPrivateInfo 4026)",
    SeizeNotTerminated => "seize-not-terminated":
        "the line-seize subscription is not terminated when the outbound call progresses",
    HoldNotNotified => "hold-not-notified":
        "a hold does not change the appearance state told to the phones (it stays active)",
    SecondCallOnFirst => "second-call-on-first":
        "every inbound call is put on appearance 1, a second one too while the first call is up on it",
    CancelledStaysAlerting => "cancelled-stays-alerting":
        "an inbound call the caller cancels while it alerts leaves its appearance alerting: the phones are never told idle",
    RejectedStaysProgressing => "rejected-stays-progressing":
        "an outbound call the far end refuses leaves its appearance progressing: the phones are never told idle",
    InactiveNotHeld => "inactive-not-held":
        "a re-INVITE offering a=inactive is answered as a resume: the call is not held",
    Rfc2543NotHeld => "rfc2543-not-held":
        "a re-INVITE with connection address 0.0.0.0 (RFC 2543 hold) is answered as a resume: the call is not held",
    UpdateNotHeld => "update-not-held":
        "an UPDATE offering a=sendonly is answered 200 but the call is not held",
    RetrieveNotTransfer => "retrieve-not-transfer":
        "the phone whose held call is retrieved is released with CallState Ok and no Cause",
    BargeRefused => "barge-refused":
        "a barge-in on an active appearance is refused (486)",
    OnHookWhileHeld => "onhook-while-held":
        "a phone that hangs up a held call also gets EventOnHook",
    LostAckFreesAppearance => "lost-ack-frees-appearance":
        "a 200 sent again because its ACK did not come frees the call's appearance: the phones are told idle while the call is up",
    DoubleSeize => "double-seize":
        "a line-seize of an appearance that is already seized is granted",
    SeizeNeverExpires => "seize-never-expires":
        "a line seizure outlives its Expires",
    PrivateRetrievable => "private-retrievable":
        "a privately held call can be retrieved by the other phone",
    IdleRetrieveWrongCode => "idle-retrieve-480":
        "a retrieve of an idle appearance is refused with 480 instead of 404",
    NoTerminatedNotify => "no-terminated-notify":
        "an unsubscribe (Expires 0) gets no terminating NOTIFY",
    RetrievedStaysActive => "retrieved-stays-active":
        "a call retrieved by the other phone leaves its appearance active when it ends: the phones are never told idle",
    RefusedStillNotified => "refused-still-notified":
        "a call-info NOTIFY answered 481 does not end its subscription: the phone is notified again",
    RebootKeepsAppearance => "reboot-keeps-appearance":
        "a phone's fresh call-info SUBSCRIBE (what it sends after a reboot) frees none of its appearances: the phones are still told they are active",
    GlareLeavesLoser => "glare-leaves-loser":
        "when both phones answer at once, the answer that crossed the CANCEL is ACKed but its dialog never ended: the losing phone stays in a call nobody hears",
    StopsOnReboot => "stops-on-reboot":
        "a phone's fresh call-info SUBSCRIBE while it holds a busy appearance (a reboot) makes the server stop answering anything, as a crash would (`scacheck serve` exits)",
    NoReconnect => "no-reconnect":
        "over TCP or TLS, requests to a phone go only over the connection its requests came on: once the phone closed it, the phone is never reached again",
    StaleRoute => "stale-route":
        "a phone's fresh call-info SUBSCRIBE by a new route (another edge proxy) is answered by it, but later NOTIFYs keep the route of its subscription before (Kamailio's sca before 5.8)",
    KeepsAppearance => "keeps-appearance":
        "an ended call's appearance is never freed in the line's state: the phones are told idle, a fresh subscription is told it is still busy",
}

impl Fault {
    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// Every fault with what it does, a line each (`scacheck faults`).
    pub fn list() -> String {
        Fault::ALL
            .iter()
            .map(|f| format!("{:<26} {}\n", f.name(), f.description()))
            .collect()
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
