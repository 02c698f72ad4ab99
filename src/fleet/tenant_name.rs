//! The rule that keeps a default tenant name from merging two customers.
//!
//! A tenant's name is shared by all its domains: they route to the same
//! instance, whose data directory on a server is keyed by the name. When a
//! tenant is added without a name, it is the domain's first label
//! (`customer-1.example.com` is tenant `customer-1`); if that name is already a
//! tenant's, the new domain joins it. That is right for another domain of the
//! same customer and wrong for another customer whose domain happens to start
//! with the same label (`a.other-customer.net` next to `a.example.com`).
//!
//! slum tells them apart by the registrable domain (the public suffix plus one
//! label, as browsers scope cookies): a derived name joins an existing tenant
//! only when one of that tenant's domains has the same registrable domain as the
//! new one (`a.shop.example.com` joins `a.example.com`); otherwise the call is
//! refused and asks for the name. The suffixes are Mozilla's Public Suffix List
//! as compiled into the `psl` crate (released with every list update), ICANN and
//! private sections alike: `a.example.co.uk` and `a.other.co.uk` differ, and
//! every `*.github.io` site is a registrable domain of its own. A name given
//! explicitly is never checked: joining is then meant.

use psl::{List, Psl};

use crate::error::{Error, Result};
use crate::fleet::model::Tenant;

/// The registrable domain of a (normalised) host name: its public suffix and
/// one more label (`a.b.example.co.uk` → `example.co.uk`). A name that is a
/// public suffix itself, or a single label (`localhost`), is its own.
pub fn registrable_domain(domain: &str) -> &str {
    List.domain(domain.as_bytes())
        .and_then(|d| std::str::from_utf8(d.as_bytes()).ok())
        .unwrap_or(domain)
}

/// Whether `tenant`, whose name was derived from its domain, may join the
/// tenant of that name among `existing`: yes when no tenant has the name yet
/// or one of its domains shares the new domain's registrable domain; otherwise
/// `Invalid` on `tenant.name`, naming the other tenant's domain and how to give
/// a name.
pub fn check_derived_name(tenant: &Tenant, existing: &[Tenant]) -> Result<()> {
    let mine = registrable_domain(&tenant.domain);
    let same_name: Vec<&Tenant> = existing.iter().filter(|t| t.name == tenant.name).collect();
    if same_name.is_empty()
        || same_name
            .iter()
            .any(|t| registrable_domain(&t.domain) == mine)
    {
        return Ok(());
    }
    let other = &same_name[0].domain;
    Err(Error::invalid(
        "tenant.name",
        format!(
            "'{name}', the first label of {domain}, already names the tenant of {other}, \
             in another registrable domain ({theirs}, not {mine}): give the name \
             (--name in the CLI, \"name\" in the API), a new one for another customer, \
             or '{name}' to share that tenant's instance and data",
            name = tenant.name,
            domain = tenant.domain,
            theirs = registrable_domain(other),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(domain: &str, name: &str) -> Tenant {
        Tenant {
            domain: domain.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn registrable_domains_follow_the_public_suffix_list() {
        for (domain, registrable) in [
            ("a.example.com", "example.com"),
            ("www.a.example.com", "example.com"),
            ("example.com", "example.com"),
            ("a.example.co.uk", "example.co.uk"),
            ("a.b.other.co.uk", "other.co.uk"),
            ("a.github.io", "a.github.io"),
            ("x.a.github.io", "a.github.io"),
            ("customer-1.fleet.test", "fleet.test"),
            ("a.internal", "a.internal"),
            ("localhost", "localhost"),
            ("co.uk", "co.uk"),
        ] {
            assert_eq!(registrable_domain(domain), registrable, "{domain}");
        }
    }

    #[test]
    fn a_derived_name_joins_only_within_one_registrable_domain() {
        let fleet = [
            tenant("a.example.com", "a"),
            tenant("shop.example.org", "b"),
        ];
        // Nobody is called `c` yet; another domain of `a`'s customer joins.
        assert!(check_derived_name(&tenant("c.example.net", "c"), &fleet).is_ok());
        assert!(check_derived_name(&tenant("a.shop.example.com", "a"), &fleet).is_ok());
        // `b` owns a domain of example.org, so b.example.org may join it.
        assert!(check_derived_name(&tenant("b.example.org", "b"), &fleet).is_ok());
        for other in ["a.other-customer.net", "a.example.co.uk", "a.com"] {
            match check_derived_name(&tenant(other, "a"), &fleet) {
                Err(Error::Invalid { field, reason }) => {
                    assert_eq!(field, "tenant.name");
                    assert!(reason.contains("--name"), "{reason}");
                    assert!(reason.contains("a.example.com"), "{reason}");
                }
                r => panic!("{other}: expected Invalid, got {r:?}"),
            }
        }
        let pages = [tenant("a.github.io", "a")];
        assert!(check_derived_name(&tenant("a.gitlab.io", "a"), &pages).is_err());
    }
}
