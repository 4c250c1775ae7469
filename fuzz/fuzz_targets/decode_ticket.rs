//! `Ticket::decode` on arbitrary bytes, and `Ticket::from_text` on them as text: never a
//! panic; a decoded ticket encodes to something that decodes to the same ticket.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wtd_keys::Ticket;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Ticket::decode(data) {
        assert_eq!(Ticket::decode(&t.encode()).as_ref(), Ok(&t));
        assert_eq!(Ticket::from_text(&t.to_text()).as_ref(), Ok(&t));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Ticket::from_text(text);
    }
});
