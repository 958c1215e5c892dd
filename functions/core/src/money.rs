//! Currencies and the one rounding rule.
//!
//! Amounts stay exact [`Decimal`]s through every step of pricing, so a long chain of tiny
//! per-unit prices never accumulates float error. They are rounded exactly once, when an
//! invoice line is finished, with [`Currency::round`]: half-even ("banker's rounding") to the
//! currency's minor unit, which keeps rounding errors from drifting in one direction across
//! many lines. Every other module calls that one function; none rounds money on its own.

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// An ISO 4217 currency with its minor-unit exponent (USD 2, JPY 0, KWD 3).
///
/// Serialised as its upper-case code (`"USD"`); unknown codes are refused when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency {
    code: &'static str,
    minor_units: u32,
}

/// A currency code that is not in the supported ISO 4217 list.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown currency code {code:?}; expected an upper-case ISO 4217 code such as USD, EUR or JPY"
)]
pub struct CurrencyError {
    pub code: String,
}

/// The supported currencies: code and number of decimal places of the minor unit.
const KNOWN: &[(&str, u32)] = &[
    ("AED", 2),
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("MYR", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PLN", 2),
    ("RON", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("VND", 0),
    ("ZAR", 2),
];

impl Currency {
    /// US dollar, two decimal places.
    pub const USD: Currency = Currency {
        code: "USD",
        minor_units: 2,
    };
    /// Euro, two decimal places.
    pub const EUR: Currency = Currency {
        code: "EUR",
        minor_units: 2,
    };
    /// Pound sterling, two decimal places.
    pub const GBP: Currency = Currency {
        code: "GBP",
        minor_units: 2,
    };
    /// Japanese yen, no minor unit.
    pub const JPY: Currency = Currency {
        code: "JPY",
        minor_units: 0,
    };

    /// Looks up an upper-case ISO 4217 code.
    pub fn from_code(code: &str) -> Result<Currency, CurrencyError> {
        KNOWN
            .iter()
            .find(|(known, _)| *known == code)
            .map(|&(code, minor_units)| Currency { code, minor_units })
            .ok_or_else(|| CurrencyError {
                code: code.to_owned(),
            })
    }

    /// The ISO 4217 code, such as `USD`.
    pub fn code(self) -> &'static str {
        self.code
    }

    /// Decimal places of the minor unit: 2 for cents, 0 for yen.
    pub fn minor_units(self) -> u32 {
        self.minor_units
    }

    /// The rounding rule of tollgate: half-even to the minor unit, with the scale padded to
    /// exactly the minor unit (so `29` becomes `29.00` in USD). Applied once per invoice line.
    pub fn round(self, amount: Decimal) -> Decimal {
        let mut rounded =
            amount.round_dp_with_strategy(self.minor_units, RoundingStrategy::MidpointNearestEven);
        rounded.rescale(self.minor_units);
        rounded
    }

    /// A rounded amount as an integer count of minor units (cents for USD), the form payment
    /// providers such as Stripe expect. `None` if it does not fit an `i64`.
    pub fn to_minor_units(self, amount: Decimal) -> Option<i64> {
        use rust_decimal::prelude::ToPrimitive;
        let factor = Decimal::from(10_i64.checked_pow(self.minor_units)?);
        self.round(amount).checked_mul(factor)?.to_i64()
    }

    /// Shows an amount with at least the minor unit's decimal places and the code, without
    /// rounding: `0.50 USD`, `0.004 USD`, `120 JPY`. Meant for prices in descriptions.
    pub fn display(self, amount: Decimal) -> String {
        let mut shown = amount;
        if shown.scale() < self.minor_units {
            shown.rescale(self.minor_units);
        }
        format!("{shown} {}", self.code)
    }
}

impl TryFrom<String> for Currency {
    type Error = CurrencyError;
    fn try_from(code: String) -> Result<Self, CurrencyError> {
        Currency::from_code(&code)
    }
}

impl std::str::FromStr for Currency {
    type Err = CurrencyError;
    fn from_str(code: &str) -> Result<Self, CurrencyError> {
        Currency::from_code(code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::from_code(&code).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn rounds_half_to_even_at_the_minor_unit() {
        let cases = [
            (Currency::USD, dec!(0.125), dec!(0.12)),
            (Currency::USD, dec!(0.135), dec!(0.14)),
            (Currency::USD, dec!(0.145), dec!(0.14)),
            (Currency::USD, dec!(0.1251), dec!(0.13)),
            (Currency::USD, dec!(-0.125), dec!(-0.12)),
            (Currency::JPY, dec!(2.5), dec!(2)),
            (Currency::JPY, dec!(3.5), dec!(4)),
            (Currency::JPY, dec!(120.49), dec!(120)),
            (
                Currency::from_code("KWD").unwrap(),
                dec!(1.0005),
                dec!(1.000),
            ),
        ];
        for (currency, amount, expected) in cases {
            assert_eq!(currency.round(amount), expected, "{amount} {currency}");
        }
    }

    #[test]
    fn rounded_amounts_carry_exactly_the_minor_unit_scale() {
        assert_eq!(Currency::USD.round(dec!(29)).to_string(), "29.00");
        assert_eq!(Currency::JPY.round(dec!(29.4)).to_string(), "29");
        assert_eq!(Currency::USD.to_minor_units(dec!(29.505)), Some(2950));
        assert_eq!(Currency::JPY.to_minor_units(dec!(1500)), Some(1500));
    }

    #[test]
    fn serialises_as_the_code_and_refuses_unknown_codes() {
        assert_eq!(serde_json::to_string(&Currency::EUR).unwrap(), "\"EUR\"");
        let jpy: Currency = serde_json::from_str("\"JPY\"").unwrap();
        assert_eq!(jpy.minor_units(), 0);
        assert!(serde_json::from_str::<Currency>("\"XYZ\"").is_err());
        assert!(serde_json::from_str::<Currency>("\"usd\"").is_err());
    }

    #[test]
    fn displays_prices_without_rounding_them() {
        assert_eq!(Currency::USD.display(dec!(0.5)), "0.50 USD");
        assert_eq!(Currency::USD.display(dec!(0.004)), "0.004 USD");
        assert_eq!(Currency::JPY.display(dec!(120)), "120 JPY");
    }
}
