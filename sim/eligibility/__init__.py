"""The simulated eligibility service (オンライン資格確認): verifies a reader's signed challenge
and the card certificate's chain, keeps registrations and transactions in a real database."""
