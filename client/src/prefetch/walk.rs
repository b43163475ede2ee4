//! Telling a walk over a directory (`find | xargs cat`, `tar`, `cp -r`) from a program
//! picking a few of its files, in work bounded whatever the directory's size.

/// Most entries looked at to tell whether a file opened follows the one opened before
/// in its directory, or comes first in it: opens in a directory of a million entries
/// cost what they cost in a small one.
const GAP: usize = 16;

/// The index below `len` nearest `from` (itself excluded: looked at already) for which
/// `is_it` holds: an entry that entries added or removed before it moved is found in
/// twice as many looks as it moved, not one per entry before it (each open of a walk
/// of a huge directory after a switch that shifted it).
pub(super) fn nearest(from: usize, len: usize, is_it: impl Fn(&usize) -> bool) -> Option<usize> {
    let from = from.min(len);
    (1..=from.max(len - from))
        .flat_map(|d| [from.checked_sub(d), Some(from + d)])
        .flatten()
        .filter(|i| *i < len)
        .find(is_it)
}

/// How a directory has been read, to tell a walk from a program picking files.
#[derive(Default)]
pub(super) struct Reads {
    /// Whether it was listed.
    pub(super) listed: bool,
    /// The entry index of the file opened last, and how many neighbours in a row that
    /// one ends.
    last: Option<(usize, u32)>,
}

impl Reads {
    /// Notes that its regular file at entry index `pos` is opened (`is_file` tells the
    /// kind of entry at an index); returns whether the directory is read in order: its
    /// first regular file after a listing, or the third of three neighbours in a row
    /// (regular files with only other kinds of entry between them). Looks at most
    /// [`GAP`] entries, so a file behind more than that many others is neither.
    pub(super) fn open(&mut self, pos: usize, is_file: impl Fn(usize) -> bool) -> bool {
        let next_after =
            |last: usize| pos > last && pos - last <= GAP && !(last + 1..pos).any(&is_file);
        let run = match self.last {
            Some((last, run)) if next_after(last) => run + 1,
            _ => 1,
        };
        self.last = Some((pos, run));
        let first = pos < GAP && !(0..pos).any(&is_file);
        (self.listed && first) || run >= 3
    }
}

#[cfg(test)]
mod tests {
    use super::{Reads, nearest};

    fn opens(listed: bool, positions: &[usize]) -> Vec<bool> {
        kinds_opens(listed, &[true; 64], positions)
    }

    /// Opens at `positions` of a directory whose entry `i` is a regular file if
    /// `files[i]`.
    fn kinds_opens(listed: bool, files: &[bool], positions: &[usize]) -> Vec<bool> {
        let mut r = Reads {
            listed,
            ..Reads::default()
        };
        positions.iter().map(|&p| r.open(p, |i| files[i])).collect()
    }

    #[test]
    fn a_walk_is_in_order_and_a_program_picking_files_is_not() {
        // `find | xargs cat`: listed, then its first file.
        assert_eq!(opens(true, &[0, 1]), [true, false]);
        // Three neighbours in a row, listed or not.
        assert_eq!(opens(false, &[4, 5, 6, 7]), [false, false, true, true]);
        // The first file opened without a listing (a shell first in /bin, the dynamic
        // linker), or after one but further down (a module picked out of the stdlib).
        assert_eq!(opens(false, &[0]), [false]);
        assert_eq!(opens(true, &[37, 12, 30]), [false, false, false]);
        // An `__init__.py` and its neighbour, then a module further on.
        assert_eq!(opens(false, &[0, 1, 5]), [false, false, false]);
        // A run broken starts again.
        assert_eq!(opens(false, &[1, 2, 9, 3, 4]), [false; 5]);
    }

    #[test]
    fn other_entries_between_files_keep_them_neighbours_within_the_gap() {
        // Subdirectories (false) first and between files: a walk still reads in order.
        let files = [false, false, true, false, true, true, false, true];
        assert_eq!(kinds_opens(true, &files, &[2, 4]), [true, false]);
        assert_eq!(
            kinds_opens(false, &files, &[2, 4, 5, 7]),
            [false, false, true, true]
        );
        // A file behind more than GAP other entries: not found to be first (nor a
        // neighbour), whatever the directory's size.
        let mut far = vec![false; super::GAP + 1];
        far.push(true);
        far.push(true);
        assert_eq!(kinds_opens(true, &far, &[super::GAP + 1]), [false]);
        let mut apart = vec![true];
        apart.extend([false; super::GAP]);
        apart.push(true);
        assert_eq!(
            kinds_opens(false, &apart, &[0, super::GAP + 1]),
            [false, false]
        );
    }

    #[test]
    fn an_entry_shifted_by_a_switch_is_found_near_where_it_was() {
        let looks = &std::cell::Cell::new(0);
        let at = |wanted: usize| {
            move |i: &usize| {
                looks.set(looks.get() + 1);
                *i == wanted
            }
        };
        // One entry added, or two removed, before it in a directory of a million.
        assert_eq!(nearest(500_000, 1 << 20, at(500_001)), Some(500_001));
        assert_eq!(nearest(500_000, 1 << 20, at(499_998)), Some(499_998));
        assert!(looks.get() <= 6, "{} entries looked at", looks.get());
        // The directory shrank below where it was; or the file is gone.
        assert_eq!(nearest(10, 4, at(3)), Some(3));
        looks.set(0);
        assert_eq!(nearest(2, 5, at(9)), None);
        assert_eq!(looks.get(), 4, "every other entry, once");
    }
}
