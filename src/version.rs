//! WSK version negotiation: which of the versions this driver supports fit a provider's range.
//!
//! Pure logic, any IRQL.

use crate::abi::{
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

/// The versions this driver supports, highest first: the order attach tries them in.
pub const SUPPORTED_VERSIONS: [WskVersion; 2] = [WskVersion::V1_1, WskVersion::V1_0];

/// One `WSK_CLIENT_DISPATCH` per supported version, in the same order. Static: NMR keeps the
/// pointer for as long as the binding lives.
/// (Evaluated at compile time: an index out of range would fail the build, not run.)
#[allow(clippy::indexing_slicing)]
static CLIENT_DISPATCH: [WSK_CLIENT_DISPATCH; SUPPORTED_VERSIONS.len()] = {
    let mut table = [WSK_CLIENT_DISPATCH {
        Version: 0,
        Reserved: 0,
        WskClientEvent: None,
    }; SUPPORTED_VERSIONS.len()];
    let mut i = 0;
    while i < SUPPORTED_VERSIONS.len() {
        table[i].Version = SUPPORTED_VERSIONS[i].raw();
        i += 1;
    }
    table
};

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
    /// No supported version lies in `[lowest, highest]`.
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

    /// The supported versions in the range, highest first.
    pub fn candidates(self) -> impl Iterator<Item = Candidate> {
        SUPPORTED_VERSIONS
            .iter()
            .zip(CLIENT_DISPATCH.iter())
            .filter(move |(version, _)| self.contains(**version))
            .map(|(&version, dispatch)| Candidate { version, dispatch })
    }

    /// Checks that at least one supported version fits.
    ///
    /// # Errors
    /// [`RangeError::NoCommonVersion`] when none does.
    pub fn require_common_version(self) -> Result<Self, RangeError> {
        if self.candidates().next().is_some() {
            Ok(self)
        } else {
            Err(RangeError::NoCommonVersion(self))
        }
    }
}
