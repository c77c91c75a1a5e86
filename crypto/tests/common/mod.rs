//! Reading the vector files of `testdata/`: blocks separated by a blank line, each a list of
//! `field: value` lines.
#![allow(dead_code)] // Each test crate uses a part.

/// One block of a vector file.
pub struct Block<'a>(&'a str);

impl Block<'_> {
    /// The value of `name`, if the block states it.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .map(str::to_string)
    }

    /// The value of `name`, which the block must state.
    pub fn field(&self, name: &str) -> String {
        self.get(name)
            .unwrap_or_else(|| panic!("a vector without {name}"))
    }

    /// `name` read as a number.
    pub fn num(&self, name: &str) -> u64 {
        self.field(name).parse().expect("a number")
    }

    /// `name` read as 32 bytes of hex.
    pub fn hex32(&self, name: &str) -> [u8; 32] {
        hex::decode(self.field(name).trim())
            .expect("hex")
            .try_into()
            .expect("32 bytes")
    }
}

/// The blocks of `text`.
pub fn blocks(text: &str) -> impl Iterator<Item = Block<'_>> {
    text.split("\n\n").map(Block)
}

/// The text of `testdata/<file>`.
pub fn testdata(file: &str) -> String {
    let path = format!("{}/testdata/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
