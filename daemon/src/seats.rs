//! Who may hold the open connections: a total cap, a share per peer (uid) and a reserve only
//! admins may use, so one peer holding many connections keeps out only itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// How the connection cap is divided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatLimits {
    /// Connections open at once over all peers.
    pub total: usize,
    /// Connections one non-admin uid may hold.
    pub per_peer: usize,
    /// Part of `total` only admins may take.
    pub admin_reserve: usize,
}

/// Why a connection gets no seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoSeat {
    #[error("too many connections; retry shortly")]
    Full,
    #[error("this peer holds its share of connections; close some or retry shortly")]
    PeerShare,
}

/// Seats taken, by uid.
#[derive(Default)]
struct Taken {
    /// Seats held over all peers, checked against the cap (less the admin reserve for
    /// non-admins).
    total: usize,
    /// Seats held by each uid, checked against its share; a uid holding none has no entry.
    by_peer: HashMap<u32, usize>,
}

/// The seats of one listener; cheap to clone.
#[derive(Clone)]
pub struct Seats {
    /// The cap, the per-peer share and the admin reserve every `take` is checked against.
    limits: SeatLimits,
    /// The counts, shared by every clone and by every `Seat`, which gives its own back on
    /// drop.
    taken: Arc<Mutex<Taken>>,
}

impl Seats {
    pub fn new(limits: SeatLimits) -> Seats {
        Seats {
            limits,
            taken: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Taken> {
        self.taken
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A seat for a connection of `uid`: admins may use the reserve and have no share limit.
    pub fn take(&self, uid: u32, admin: bool) -> Result<Seat, NoSeat> {
        let mut taken = self.lock();
        let room = if admin {
            self.limits.total
        } else {
            self.limits.total.saturating_sub(self.limits.admin_reserve)
        };
        if taken.total >= room {
            return Err(NoSeat::Full);
        }
        let held = taken.by_peer.get(&uid).copied().unwrap_or(0);
        if !admin && held >= self.limits.per_peer {
            return Err(NoSeat::PeerShare);
        }
        taken.total += 1;
        taken.by_peer.insert(uid, held + 1);
        Ok(Seat {
            seats: self.clone(),
            uid,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }
}

/// A taken seat; dropping it frees it.
pub struct Seat {
    /// The listener's seats, whose counts the drop decrements.
    seats: Seats,
    /// The peer the seat was counted for, so the drop frees a seat of that peer's share.
    uid: u32,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut taken = self.seats.lock();
        taken.total = taken.total.saturating_sub(1);
        if let Some(held) = taken.by_peer.get_mut(&self.uid) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                taken.by_peer.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seats() -> Seats {
        Seats::new(SeatLimits {
            total: 10,
            per_peer: 4,
            admin_reserve: 3,
        })
    }

    #[test]
    fn a_peer_fills_only_its_share() {
        let seats = seats();
        let held: Vec<Seat> = (0..4).map(|_| seats.take(1000, false).unwrap()).collect();
        assert_eq!(seats.take(1000, false).err(), Some(NoSeat::PeerShare));
        let other = seats.take(1001, false).unwrap();
        drop(held);
        assert_eq!(seats.open(), 1);
        seats.take(1000, false).unwrap();
        drop(other);
    }

    #[test]
    fn the_reserve_is_for_admins() {
        let seats = seats();
        let held: Vec<Seat> = (0..7)
            .map(|n| seats.take(1000 + n, false).unwrap())
            .collect();
        assert_eq!(seats.take(2000, false).err(), Some(NoSeat::Full));
        let admins: Vec<Seat> = (0..3).map(|_| seats.take(0, true).unwrap()).collect();
        assert_eq!(seats.take(0, true).err(), Some(NoSeat::Full));
        drop((held, admins));
        assert_eq!(seats.open(), 0);
    }
}
