//! The request's `stop` strings, matched on the answer's text as it streams: text that
//! could still be the start of a stop string is held back until it is not.

pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet released.
    held: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new() }
    }

    /// Takes the next piece of text; returns what can be released and whether a stop
    /// string was completed (then the release ends just before it).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        self.held.push_str(piece);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        // Hold back the longest tail that is a prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .flat_map(|s| (1..s.len().min(self.held.len() + 1)).rev().filter(move |&n| s.is_char_boundary(n)).map(move |n| &s[..n]))
            .filter(|prefix| self.held.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// What is still held when the answer ends without a stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_a_possible_stop_string_and_cuts_before_a_complete_one() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("hello E"), ("hello ".into(), false));
        assert_eq!(m.push("N"), (String::new(), false));
        assert_eq!(m.push("Xtra"), ("ENXtra".into(), false));
        assert_eq!(m.push(" and EN"), (" and ".into(), false));
        assert_eq!(m.push("D more"), (String::new(), true));
        let mut m = StopMatcher::new(vec!["stop".into()]);
        assert_eq!(m.push("no st"), ("no ".into(), false));
        assert_eq!(m.finish(), "st");
    }
}
