//! Deserialisers for fields of JSON bodies, shared by the daemons' APIs.

/// For optional body fields that may be absent but not `null` (serde's
/// `Option` would take `null` as absent): `#[serde(default, deserialize_with
/// = "qi_common::json_fields::present")]`. With `T = Option<U>` the field
/// tells absent (`None`), `null` (`Some(None)`) and a value apart, as a
/// merge patch needs.
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}
