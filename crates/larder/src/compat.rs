//! cloud-manager's names, kept so that code written against cloud-manager
//! (the README's examples, a Python binding) runs unchanged. Each is another
//! name for one operation of the core API, which has one name per
//! operation; new code uses those.
//!
//! | cloud-manager | `Store` | `Larder` |
//! |---|---|---|
//! | `upload` | [`Store::put`] | [`Larder::upload`] |
//! | `exists` | [`Store::contains`] | [`Larder::contains`] (any tier) |
//! | `on_cache` | [`Store::contains`] | the local tier's [`Store::contains`] |
//! | `warm_up`, `download` | [`Store::mark_used`] | [`Larder::fetch`] |
//! | `usage_ratio` | [`Store::stats`] | the local tier's [`Store::stats`] |
//! | `close` | [`Store::close`] | [`Larder::close`] |

use crate::digest::Digest;
use crate::error::Result;
use crate::progress::NoProgress;
use crate::store::{Store, Target};
use crate::tiers::Larder;

impl Store {
    /// cloud-manager's `exists`: [`Store::contains`].
    pub fn exists(&self, target: impl Into<Target>) -> Result<bool> {
        self.contains(target)
    }

    /// cloud-manager's `on_cache`: [`Store::contains`].
    pub fn on_cache(&self, target: impl Into<Target>) -> Result<bool> {
        self.contains(target)
    }

    /// cloud-manager's `warm_up`: [`Store::mark_used`] (the local tier has
    /// nowhere to fetch from).
    pub fn warm_up(&self, target: impl Into<Target>) -> Result<Digest> {
        self.mark_used(&target.into())
    }

    /// cloud-manager's `download`: [`Store::mark_used`].
    pub fn download(&self, target: impl Into<Target>) -> Result<Digest> {
        self.mark_used(&target.into())
    }

    /// cloud-manager's `usage_ratio`: bytes held over capacity, from
    /// [`Store::stats`].
    pub fn usage_ratio(&self) -> Result<f64> {
        Ok(self.stats()?.usage_ratio)
    }
}

impl Larder {
    /// cloud-manager's `exists`: [`Larder::contains`], in any tier.
    pub fn exists(&self, target: &Target) -> Result<bool> {
        self.contains(target)
    }

    /// cloud-manager's `on_cache`: whether the local tier holds `target`.
    pub fn on_cache(&self, target: &Target) -> Result<bool> {
        self.store().contains(target.clone())
    }

    /// cloud-manager's `warm_up`: [`Larder::fetch`] without progress.
    pub fn warm_up(&self, target: &Target) -> Result<Digest> {
        self.fetch(target, &NoProgress)
    }

    /// cloud-manager's `download`: [`Larder::fetch`] without progress.
    pub fn download(&self, target: &Target) -> Result<Digest> {
        self.fetch(target, &NoProgress)
    }

    /// cloud-manager's `usage_ratio`: the local tier's, from [`Store::stats`].
    pub fn usage_ratio(&self) -> Result<f64> {
        Ok(self.store().stats()?.usage_ratio)
    }
}
