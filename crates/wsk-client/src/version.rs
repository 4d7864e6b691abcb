//! WSK version negotiation: which of the versions a client supports fit a provider's range, and
//! the client's `WSK_CLIENT_DISPATCH` per version, built at compile time.
//!
//! Pure logic, any IRQL.

use core::marker::PhantomData;

use crate::client::Client;
use crate::sys::{
    MAKE_WSK_VERSION, WSK_CLIENT_DISPATCH, WSK_MAJOR_VERSION, WSK_MINOR_VERSION,
    WSK_PROVIDER_CHARACTERISTICS,
};

/// A WSK NPI version (`MAKE_WSK_VERSION(major, minor)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WskVersion(u16);

impl WskVersion {
    /// WSK 1.0 (Windows Vista).
    pub const V1_0: Self = Self(MAKE_WSK_VERSION(1, 0));
    /// WSK 1.1 (Windows 7): adds the address-info members to `WSK_PROVIDER_DISPATCH`.
    pub const V1_1: Self = Self(MAKE_WSK_VERSION(1, 1));

    /// Wraps a raw `MAKE_WSK_VERSION` value.
    #[must_use]
    pub const fn from_raw(raw: u16) -> Self {
        Self(raw)
    }

    /// The raw `MAKE_WSK_VERSION` value.
    #[must_use]
    pub const fn raw(self) -> u16 {
        self.0
    }

    /// The major number.
    #[must_use]
    pub const fn major(self) -> u8 {
        WSK_MAJOR_VERSION(self.0)
    }

    /// The minor number.
    #[must_use]
    pub const fn minor(self) -> u8 {
        WSK_MINOR_VERSION(self.0)
    }
}

/// The most versions a client may list in [`Client::VERSIONS`].
pub const MAX_VERSIONS: usize = 4;

/// The client dispatch tables of client `C`, one per entry of [`Client::VERSIONS`], in the same
/// order; NMR keeps the pointer for as long as the binding lives, so they are constants with a
/// `'static` address.
pub(crate) struct Dispatch<C>(PhantomData<C>);

impl<C: Client> Dispatch<C> {
    /// Fails the build when `C::VERSIONS` is empty, too long or not strictly descending.
    #[allow(clippy::indexing_slicing)] // evaluated at compile time: out of range fails the build
    pub(crate) const CHECK: () = {
        let versions = C::VERSIONS;
        assert!(
            !versions.is_empty() && versions.len() <= MAX_VERSIONS,
            "Client::VERSIONS must list 1 to MAX_VERSIONS versions"
        );
        let mut i = 1;
        while i < versions.len() {
            assert!(
                versions[i - 1].0 > versions[i].0,
                "Client::VERSIONS must be strictly descending (highest first)"
            );
            i += 1;
        }
    };

    /// The tables (entries past `C::VERSIONS.len()` are unused).
    #[allow(clippy::indexing_slicing)] // evaluated at compile time: out of range fails the build
    pub(crate) const TABLES: &'static [WSK_CLIENT_DISPATCH; MAX_VERSIONS] = &{
        let mut table = [WSK_CLIENT_DISPATCH {
            Version: 0,
            Reserved: 0,
            WskClientEvent: None,
        }; MAX_VERSIONS];
        let mut i = 0;
        while i < C::VERSIONS.len() && i < MAX_VERSIONS {
            table[i].Version = C::VERSIONS[i].raw();
            table[i].WskClientEvent = C::CLIENT_EVENT;
            i += 1;
        }
        table
    };
}

/// A supported version together with the client dispatch that asks for it.
#[derive(Clone, Copy)]
pub struct Candidate {
    /// The version.
    pub version: WskVersion,
    /// The static `WSK_CLIENT_DISPATCH` naming `version`.
    pub dispatch: &'static WSK_CLIENT_DISPATCH,
}

/// A provider's supported range, checked: `lowest <= highest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderRange {
    lowest: WskVersion,
    highest: WskVersion,
}

/// Why a provider's characteristics cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// `LowestVersion > HighestVersion`.
    Inverted {
        /// `LowestVersion`.
        lowest: WskVersion,
        /// `HighestVersion`.
        highest: WskVersion,
    },
    /// None of the client's versions lies in `[lowest, highest]`.
    NoCommonVersion(ProviderRange),
}

impl ProviderRange {
    /// Reads a provider's `WSK_PROVIDER_CHARACTERISTICS`.
    ///
    /// # Errors
    /// [`RangeError::Inverted`] when the lowest version is above the highest.
    pub const fn new(characteristics: &WSK_PROVIDER_CHARACTERISTICS) -> Result<Self, RangeError> {
        let lowest = WskVersion(characteristics.LowestVersion);
        let highest = WskVersion(characteristics.HighestVersion);
        if lowest.0 > highest.0 {
            Err(RangeError::Inverted { lowest, highest })
        } else {
            Ok(Self { lowest, highest })
        }
    }

    /// The lowest version the provider supports.
    #[must_use]
    pub const fn lowest(self) -> WskVersion {
        self.lowest
    }

    /// The highest version the provider supports.
    #[must_use]
    pub const fn highest(self) -> WskVersion {
        self.highest
    }

    /// Whether `version` lies in the range.
    #[must_use]
    pub const fn contains(self, version: WskVersion) -> bool {
        self.lowest.0 <= version.0 && version.0 <= self.highest.0
    }

    /// The versions of client `C` in the range, highest first.
    pub fn candidates<C: Client>(self) -> impl Iterator<Item = Candidate> {
        C::VERSIONS
            .iter()
            .zip(Dispatch::<C>::TABLES.iter())
            .filter(move |(version, _)| self.contains(**version))
            .map(|(&version, dispatch)| Candidate { version, dispatch })
    }

    /// Checks that at least one version of client `C` fits.
    ///
    /// # Errors
    /// [`RangeError::NoCommonVersion`] when none does.
    pub fn require_common_version<C: Client>(self) -> Result<Self, RangeError> {
        if self.candidates::<C>().next().is_some() {
            Ok(self)
        } else {
            Err(RangeError::NoCommonVersion(self))
        }
    }
}
